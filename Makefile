# The everyday habits; each target is a thin alias for ./dev, which also works without make.
.PHONY: run test check bench lock

run:
	./dev demo

test:
	./dev test

check:
	./dev check

bench:
	./dev bench

lock:
	./dev lock
