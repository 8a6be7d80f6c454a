-- The DSN parameters (RFC 3461) an SMTP relay client gave with RCPT TO, one row per intent
-- made from such a recipient: NOTIFY (NULL: not given, failures are reported) and ORCPT,
-- decoded. They are passed on to an upstream that offers DSN and decide which delivery status
-- notifications the router sends back to the envelope sender. Recipients without them have
-- no row. The row goes with its intent.
CREATE TABLE relayed_recipients (
    intent_id  uuid PRIMARY KEY REFERENCES intents (id) ON DELETE CASCADE,
    notify     text[],
    orcpt      text
);
