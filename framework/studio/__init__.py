"""`synthloom studio`: a local web app to read runs, records and traces, and to review records."""
