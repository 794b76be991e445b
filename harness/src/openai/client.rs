//! An HTTP client for one OpenAI-compatible endpoint that records exactly what it was answered.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::OpenAiError;
use super::sse::{self, StreamCapture, StreamEnd};

/// Bounds on every exchange with an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTimeouts {
    /// Time to open a TCP connection.
    pub connect: Duration,
    /// Time for a whole non-streamed exchange.
    pub request: Duration,
    /// Longest silence tolerated between two stream events.
    pub stream_idle: Duration,
    /// Longest a whole stream may take.
    pub stream_deadline: Duration,
}

impl Default for ApiTimeouts {
    fn default() -> Self {
        ApiTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(60),
            stream_idle: Duration::from_secs(30),
            stream_deadline: Duration::from_secs(180),
        }
    }
}

/// A non-streamed HTTP exchange as the endpoint answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCapture {
    /// `GET /v1/models`, `POST /v1/completions`, ...
    pub request_line: String,
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as text.
    pub body: String,
}

impl HttpCapture {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// What came back for one request: an answer, or why none came.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    /// The endpoint answered.
    Answered(T),
    /// No HTTP answer: refused, reset, timed out, or not HTTP.
    Unanswered(String),
}

/// One OpenAI-compatible endpoint (a Dynamo frontend or a worker's system port).
///
/// Once one of its streams stalls (silent for the idle timeout, or open at the deadline) or a
/// request times out, the requests that follow on it and its clones are not sent: each is
/// answered at once with why, so a stalling endpoint gets its verdict within one idle timeout
/// however many probes follow.
#[derive(Debug, Clone)]
pub struct Endpoint {
    base: Url,
    http: reqwest::Client,
    timeouts: ApiTimeouts,
    stalled: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Endpoint {
    /// An endpoint at `base` (e.g. `http://127.0.0.1:8000`).
    pub fn new(base: &str, timeouts: ApiTimeouts) -> Result<Self, OpenAiError> {
        let mut base = Url::parse(base).map_err(|e| OpenAiError::InvalidUrl {
            url: base.to_string(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(OpenAiError::InvalidUrl {
                url: base.to_string(),
                reason: "expected an http:// or https:// URL with a host".into(),
            });
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_max_idle_per_host(4);
        // A port-forward or a process on this machine is never behind the environment's proxy
        // (Go's rule for loopback, which kubectl users expect).
        let loopback = match base.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if loopback {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| OpenAiError::Client(error_chain(&e)))?;
        Ok(Endpoint {
            base,
            http,
            timeouts,
            stalled: Default::default(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The bounds this endpoint's exchanges run under.
    pub fn timeouts(&self) -> ApiTimeouts {
        self.timeouts
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("a relative path joins onto an http base URL")
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer<HttpCapture> {
        let request = self.http.get(self.url(path)).timeout(self.timeouts.request);
        self.exchange(format!("GET {path}"), request).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer<HttpCapture> {
        let request = self
            .http
            .post(self.url(path))
            .timeout(self.timeouts.request)
            .json(body);
        self.exchange(format!("POST {path}"), request).await
    }

    /// `POST path` with a raw body sent as `application/json`, valid or not: a request built to
    /// be rejected, so its answer is due within the idle timeout, not the request timeout.
    pub async fn post_raw(&self, path: &str, body: &str) -> Answer<HttpCapture> {
        let request = self
            .http
            .post(self.url(path))
            .timeout(self.timeouts.stream_idle.min(self.timeouts.request))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.exchange(format!("POST {path}"), request).await
    }

    /// `POST path` with a JSON body, reading the answer as Server-Sent Events
    /// under the idle timeout and the overall deadline.
    pub async fn post_stream(&self, path: &str, body: &Value) -> Answer<StreamCapture> {
        self.post_raw_stream(path, body.to_string()).await
    }

    /// `POST path` with a raw body sent as `application/json`, valid or not, read as
    /// [`Endpoint::post_stream`] reads its answer.
    pub async fn post_raw_stream(&self, path: &str, body: String) -> Answer<StreamCapture> {
        let request_line = format!("POST {path} (stream)");
        if let Some(stall) = self.stalled.lock().expect("stall latch").clone() {
            return Answer::Unanswered(format!("not run: {stall}"));
        }
        let response = self
            .http
            .post(self.url(path))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send();
        let response = match tokio::time::timeout(self.timeouts.stream_idle, response).await {
            Err(_) => {
                let reason = format!("no response headers within {:?}", self.timeouts.stream_idle);
                *self.stalled.lock().expect("stall latch") = Some(format!(
                    "an earlier stream on this endpoint stalled ({request_line}: {reason})"
                ));
                return Answer::Unanswered(reason);
            }
            Ok(Err(e)) => return Answer::Unanswered(error_chain(&e)),
            Ok(Ok(response)) => response,
        };
        let capture = sse::read(request_line, response, self.timeouts).await;
        if let StreamEnd::Idle(_) | StreamEnd::Deadline(_) = capture.end {
            *self.stalled.lock().expect("stall latch") = Some(format!(
                "an earlier stream on this endpoint stalled ({} {})",
                capture.request_line,
                match capture.end {
                    StreamEnd::Idle(idle) => format!("silent for {idle:?}"),
                    _ => format!("open at the {:?} deadline", self.timeouts.stream_deadline),
                }
            ));
        }
        Answer::Answered(capture)
    }

    /// Runs `during` while a stream of `body` to `path` is in flight: after its first bytes,
    /// before its end. Returns what `during` gave and `Ok` when the stream was still open when
    /// it finished, or why no stream was in flight. The rest of the stream is then read and
    /// dropped, under the idle timeout and the deadline.
    pub async fn during_stream<T>(
        &self,
        path: &str,
        body: &Value,
        during: impl std::future::Future<Output = T>,
    ) -> (T, Result<(), String>) {
        use futures::StreamExt;
        let idle = self.timeouts.stream_idle;
        let stall = self.stalled.lock().expect("stall latch").clone();
        if let Some(stall) = stall {
            return (during.await, Err(format!("not run: {stall}")));
        }
        let request = self
            .http
            .post(self.url(path))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(body)
            .send();
        let response = match tokio::time::timeout(idle, request).await {
            Ok(Ok(r)) if r.status() == reqwest::StatusCode::OK => r,
            Ok(Ok(r)) => {
                let status = r.status();
                return (during.await, Err(format!("POST {path} answered {status}")));
            }
            Ok(Err(e)) => return (during.await, Err(error_chain(&e))),
            Err(_) => {
                let why = format!("POST {path}: no response headers within {idle:?}");
                return (during.await, Err(why));
            }
        };
        let mut events = response.bytes_stream();
        match tokio::time::timeout(idle, events.next()).await {
            Ok(Some(Ok(first))) if !contains_done(&first) => {}
            Ok(Some(Ok(_))) => {
                let why = format!("POST {path}: the stream ended with its first bytes");
                return (during.await, Err(why));
            }
            Ok(Some(Err(e))) => return (during.await, Err(error_chain(&e))),
            Ok(None) => return (during.await, Err(format!("POST {path}: an empty stream"))),
            Err(_) => {
                let why = format!("POST {path}: no event within {idle:?}");
                return (during.await, Err(why));
            }
        }
        let started = std::time::Instant::now();
        let mut ended: Option<String> = None;
        let mut during = std::pin::pin!(during);
        let output = loop {
            tokio::select! {
                output = &mut during => break output,
                next = events.next(), if ended.is_none() => match next {
                    Some(Ok(bytes)) if !contains_done(&bytes) => {}
                    Some(Ok(_)) | None => {
                        ended = Some(format!(
                            "POST {path}: the stream ended {:?} after its first event, before \
                             the requests made during it were answered",
                            started.elapsed()
                        ));
                    }
                    Some(Err(e)) => ended = Some(error_chain(&e)),
                },
            }
        };
        let rest = async {
            while let Ok(Some(Ok(_))) = tokio::time::timeout(idle, events.next()).await {}
        };
        let _ = tokio::time::timeout(self.timeouts.stream_deadline, rest).await;
        (output, ended.map_or(Ok(()), Err))
    }

    async fn exchange(
        &self,
        request_line: String,
        request: reqwest::RequestBuilder,
    ) -> Answer<HttpCapture> {
        if let Some(stall) = self.stalled.lock().expect("stall latch").clone() {
            return Answer::Unanswered(format!("not run: {stall}"));
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                let reason = error_chain(&e);
                *self.stalled.lock().expect("stall latch") = Some(format!(
                    "an earlier request on this endpoint stalled ({request_line}: {reason})"
                ));
                return Answer::Unanswered(reason);
            }
            Err(e) => return Answer::Unanswered(error_chain(&e)),
        };
        let status = response.status().as_u16();
        let content_type = header_text(response.headers(), reqwest::header::CONTENT_TYPE);
        match response.text().await {
            Ok(body) => Answer::Answered(HttpCapture {
                request_line,
                status,
                content_type,
                body,
            }),
            Err(e) => Answer::Unanswered(format!("body unreadable: {}", error_chain(&e))),
        }
    }

    /// The model ids `/v1/models` lists, or why they could not be read.
    /// Used before a run to tell a wrong URL or model name from a violation.
    pub async fn served_models(&self) -> Result<Option<Vec<String>>, OpenAiError> {
        match self.get("/v1/models").await {
            Answer::Unanswered(reason) => Err(OpenAiError::Unreachable {
                url: self.base.to_string(),
                reason,
            }),
            Answer::Answered(capture) => Ok(capture.json().and_then(|json| {
                json.get("data")?.as_array().map(|entries| {
                    entries
                        .iter()
                        .filter_map(|e| e.get("id")?.as_str().map(str::to_string))
                        .collect()
                })
            })),
        }
    }
}

fn contains_done(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"[DONE]")
}

pub(crate) fn header_text(
    headers: &reqwest::header::HeaderMap,
    name: reqwest::header::HeaderName,
) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// An error and its sources on one line, repeated messages dropped.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}
