"""GPU bookings: a user asks for a number of GPU machines of one size on days of their beamtime;
an administrator, or the instrument's scientist, accepts or refuses; accepted bookings hold their
units over the calendar, and the machines made from them live no longer than they do."""
