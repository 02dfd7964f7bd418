"""Performance: the bare-Tesseract floor beside the pipeline (bench), and Locust load runs."""
