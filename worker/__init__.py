"""The task executor: consumes the task streams and runs fetch -> parse -> chunk -> embed -> index."""
