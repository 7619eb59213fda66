"""Access: the decision policy, card keys, the door state machine, door
controllers and the hardware wiring.
"""
