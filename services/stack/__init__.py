"""Process supervision and the native (no-Docker) stack runner."""
