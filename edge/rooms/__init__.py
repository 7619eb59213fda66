"""Rooms: booking phases, the rooms controller, room devices and panels, guest
Wi-Fi.
"""
