"""The site broker: the MQTT link, the embedded broker, the topic table, Home
Assistant discovery.
"""
