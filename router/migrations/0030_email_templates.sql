-- Email templates in SendGrid's Templates API shapes (router/store/email_templates.py): a
-- template has versions, at most one of them active; Mail Send with a `template_id` renders
-- the active version. `line_messages` is the router's own: LINE message objects whose
-- strings are Handlebars, sent to LINE friends instead of text derived from the email.
CREATE TABLE email_templates (
    id          text PRIMARY KEY,               -- `d-` + 32 hex (dynamic) or a UUID (legacy)
    name        text NOT NULL,
    generation  text NOT NULL CHECK (generation IN ('dynamic', 'legacy')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_templates_listing ON email_templates (generation, created_at, id);

CREATE TABLE email_template_versions (
    id                      uuid PRIMARY KEY,
    template_id             text NOT NULL REFERENCES email_templates (id) ON DELETE CASCADE,
    name                    text NOT NULL,
    subject                 text NOT NULL DEFAULT '',
    html_content            text NOT NULL DEFAULT '',
    plain_content           text NOT NULL DEFAULT '',
    active                  boolean NOT NULL DEFAULT false,
    generate_plain_content  boolean NOT NULL DEFAULT true,
    editor                  text NOT NULL DEFAULT 'code' CHECK (editor IN ('code', 'design')),
    test_data               text,
    line_messages           jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX email_template_versions_one_active ON email_template_versions (template_id)
    WHERE active;
CREATE INDEX email_template_versions_template ON email_template_versions (template_id, created_at);
