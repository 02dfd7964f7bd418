"""Sample scans for the README's first batch, and the script that makes them."""
