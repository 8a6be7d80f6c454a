"""The front doors other than the JSON API: the SMTP relay and other services' sending APIs.

Email marketing systems speak SMTP or their ESP's API, not the router's; each module here
translates what it receives into `IntentRequest`s and hands them to the one accept path, so
every intent, whichever door it came through, is validated, routed and stored the same way.
"""
