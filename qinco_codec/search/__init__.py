"""Nearest-neighbour search inside .qnc files (issue 15): additive shortlist, QINCo re-ranking,
inverted lists."""
