"""Services zsupd hosts on the bus: tasks (pulsar-rest-api), agent (smartmob), archives, Procfiles."""
