"""LINE adapters: push, multicast and notification messages, account reads and the quota.

The Messaging API simulator the tests run these against is the separate package `linesim`.
"""
