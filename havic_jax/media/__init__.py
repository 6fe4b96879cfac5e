"""Media operations shared by dataset preparation and evaluation."""
