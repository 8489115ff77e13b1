raise RuntimeError("import-time failure")
