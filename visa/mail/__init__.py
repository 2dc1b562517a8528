"""Emails: templates, the SMTP mailer and the send-once outbox."""
