"""The embedded llama.cpp model: engine, sampling, sequences, the client, CPU threads, and the HTTP server
(`synthloom serve`)."""
