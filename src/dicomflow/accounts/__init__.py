"""People and what they did: API keys, the command-line operator as an actor, the audit log.

Sits below every product area (processing, projects, deid, intake call it; it imports none of them),
so any service can check who acts and leave one audit entry for what it did.
"""
