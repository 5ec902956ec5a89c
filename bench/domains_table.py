# Two recipe JSONs of search --bootstrap (mean and max objectives) side by side: each group's choice and how often
# the resamples give it back (README "Confidence and calibration domains"). Usage: domains_table.py MEAN.json MAX.json
import json, sys
mean, mx = (json.load(open(p)) for p in sys.argv[1:3])
print("| group | `mean`: choice (agree) | `max`: choice (agree) |")
print("| --- | --- | --- |")
for a, b in zip(mean["groups"], mx["groups"]):
    cell = lambda g: f"{g['choice']} ({100 * g['bootstrap']['choice_agreement']:.1f}%{', noisy' if g['bootstrap']['noisy'] else ''})"
    name = a["name"].removeprefix("model.")
    d = " **≠**" if a["choice"] != b["choice"] else ""
    print(f"| `{name}`{d} | {cell(a)} | {cell(b)} |")
