"""LINE adapters: push (`push`) and the Messaging API simulator used in tests (`simulator`)."""
