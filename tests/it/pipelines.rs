//! Pipelines against real processes and a real HTTP server (filled in by the pipelines work).
