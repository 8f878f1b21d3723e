"""The one request pipeline: every client request passes the same ordered stages.

Policy is the first stage; audit, approvals and masking join the same chain.
"""
