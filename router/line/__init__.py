"""LINE identity and LINE-specific content: webhooks in, events applied, account linking,
follower and audience sync, message validation and text derived from email."""
