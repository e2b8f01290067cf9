"""Remote remediation: playbooks of safe remote fixes tried before a technician is sent."""
