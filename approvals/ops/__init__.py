"""Operations: Prometheus metrics, health checks, and the dashboard's charts."""
