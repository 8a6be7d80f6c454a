"""Other services' sending APIs, converted into router intents.

Email marketing systems speak their ESP's API, not the router's; these modules turn such
requests into `IntentRequest`s and hand them to `router.intents.accept`, so every intent,
whichever API it came through, is validated, routed and stored the same way.
"""
