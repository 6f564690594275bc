"""What runs on the supervisor and IO threads and must never block."""
