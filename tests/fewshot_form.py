"""The Few-shot tab's API form as tests fill it: the task fields, then four configuration columns."""

TASK = ["built-in", "recall", None, None, "", "", "", "{key} =", " ", " ; ", ""]


def configs(base: dict, *overrides: dict) -> list:
    """The 4 x 11 column values: column n uses ``base`` updated by ``overrides[n]``; unused columns are off."""
    out = []
    for n in range(4):
        c = dict(base, use=n < len(overrides), **(overrides[n] if n < len(overrides) else {}))
        out += list(c.values())
    return out
