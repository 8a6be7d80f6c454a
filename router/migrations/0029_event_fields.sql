-- What delivery events report of the provider's answer, as SendGrid's Event Webhook does:
-- the status code (SMTP enhanced, 5.1.1) and the connection it came over (the router's local
-- address, whether it was encrypted). NULL where the channel did not say.
ALTER TABLE delivery_events ADD COLUMN status_code text;
ALTER TABLE delivery_events ADD COLUMN local_ip text;
ALTER TABLE delivery_events ADD COLUMN tls boolean;
