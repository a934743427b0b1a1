//! Prometheus metrics of the proxy itself (text exposition format).
