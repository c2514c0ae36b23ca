"""The fleet monitor: every box's availability, info and health, read from MQTT only."""
