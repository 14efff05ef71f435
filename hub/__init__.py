"""Shared plumbing of the Task Force Hub: settings, logging, Kafka clients, the local broker and the CLI."""
