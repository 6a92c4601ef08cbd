"""What the contract says: service catalogues and gates, its schedule of stages, the working-day calendar and
holidays."""
