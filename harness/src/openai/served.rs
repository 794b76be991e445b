//! Whether a frontend serves: its model listed, then a run of streamed completions served.

/// How many completions in a row a frontend must serve to count as serving.
pub const SERVED_IN_A_ROW: usize = 3;
/// How long the frontend has, from the check's start, to list the model and serve them.
pub const SERVED_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// What the frontend served while readiness was judged, each time from the check's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    /// When `/v1/models` first listed the model.
    pub registered: std::time::Duration,
    /// When the first served completion's first non-empty token arrived.
    pub first_token: std::time::Duration,
    /// Completions sent until [`SERVED_IN_A_ROW`] in a row were served.
    pub sent: usize,
}

/// One streamed completion's verdict: when its first token arrived (since it was sent), or why it
/// does not count as served.
fn served_once(capture: &crate::openai::sse::StreamCapture) -> Result<std::time::Duration, String> {
    use crate::openai::sse::StreamEnd;
    if capture.status != 200 {
        return Err(format!(
            "answered {}: {}",
            capture.status,
            crate::openai::check::excerpt(capture.error_body.as_deref().unwrap_or(""), 160)
        ));
    }
    if !matches!(capture.end, StreamEnd::Closed | StreamEnd::OpenAfterDone) {
        return Err(format!("the stream ended {:?}", capture.end));
    }
    let chunks: Vec<(std::time::Duration, String)> = capture
        .events
        .iter()
        .filter_map(|e| {
            let json: serde_json::Value = serde_json::from_str(&e.data).ok()?;
            let choice = json["choices"].as_array()?.first()?.clone();
            Some((
                e.at,
                choice["text"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    chunks
        .iter()
        .find(|(_, text)| !text.is_empty())
        .or(chunks.first())
        .map(|(at, _)| *at)
        .ok_or_else(|| format!("200 with no completion chunk: {}", capture.last_seen()))
}

/// Sends streamed one-token completions until [`SERVED_IN_A_ROW`] in a row are served, within
/// [`SERVED_WITHIN`]: a Ready frontend that serves no model (ai-dynamo/dynamo#11178) or whose
/// first requests fail (0.4.1's "endpoint subscriber shutdown") does not count as ready.
/// Errors: what `/v1/models` listed or the last completion met when time ran out.
pub async fn served_in_a_row(
    frontend: &crate::openai::Endpoint,
    model: &str,
) -> Result<Served, String> {
    let started = std::time::Instant::now();
    let mut registered = None;
    let mut first_token = None;
    let (mut in_a_row, mut sent) = (0, 0);
    let mut last = String::from("nothing yet");
    while started.elapsed() < SERVED_WITHIN {
        if registered.is_none() {
            match frontend.served_models().await {
                Ok(Some(models)) if models.iter().any(|m| m == model) => {
                    registered = Some(started.elapsed());
                }
                Ok(models) => {
                    last = format!(
                        "/v1/models does not list {model} (observed {:?})",
                        models.unwrap_or_default()
                    );
                }
                Err(e) => last = format!("/v1/models: {e}"),
            }
        }
        if registered.is_some() {
            let body = serde_json::json!({"model": model, "prompt": "readiness", "max_tokens": 2, "stream": true});
            let at = started.elapsed();
            sent += 1;
            match frontend.post_stream("/v1/completions", &body).await {
                crate::openai::Answer::Answered(capture) => match served_once(&capture) {
                    Ok(token) => {
                        first_token.get_or_insert(at + token);
                        in_a_row += 1;
                        if in_a_row == SERVED_IN_A_ROW {
                            return Ok(Served {
                                registered: registered.unwrap_or_default(),
                                first_token: first_token.unwrap_or_default(),
                                sent,
                            });
                        }
                        continue;
                    }
                    Err(why) => last = format!("completion {sent} {why}"),
                },
                crate::openai::Answer::Unanswered(why) => {
                    last = format!("completion {sent}: {why}")
                }
            }
            in_a_row = 0;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Err(format!(
        "the frontend did not serve {SERVED_IN_A_ROW} completions in a row within {SERVED_WITHIN:?} \
         ({in_a_row} in a row, {sent} sent); last: {last}"
    ))
}
