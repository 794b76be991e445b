//! The ordered conformance cases.
