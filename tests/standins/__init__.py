"""Stand-ins for what cannot run here: the Ollama server and its model runner processes."""
