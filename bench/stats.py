#!/usr/bin/env python3
"""Summarise bench samples: per figure and cores, each side's median and
min-max over its rounds, the spread ((max - min) / median) and the ratio of
poolgate's median to the peer's; beside it, the median and range of the
per-round ratios (round i of poolgate over round i of the peer, which ran
just before it), which a slow drift of the machine moves less; then the
scaling table (each figure's medians at every core count).

Input: a TSV of figure, unit, better (higher|lower|neither), cores, side, value.
Usage: stats.py SAMPLES PEER
"""
import statistics
import sys
from collections import OrderedDict


def fmt(value):
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def main():
    path, peer = sys.argv[1], sys.argv[2]
    figures = OrderedDict()
    units = {}
    with open(path, encoding="utf-8") as samples:
        for line in samples:
            figure, unit, better, cores, side, value = line.rstrip("\n").split("\t")
            units[figure] = (unit, better)
            figures.setdefault(figure, OrderedDict()).setdefault(int(cores), {}).setdefault(side, []).append(
                float(value)
            )
    if not figures:
        print("no samples")
        return 1
    head = f"{'figure':<34} {'cores':>5}  {peer + ' median [min-max]':>30}  {'poolgate median [min-max]':>30}  {'ratio':>6}  {'per round [min-max]':>20}"
    print(head)
    print("-" * len(head))
    scaling = OrderedDict()
    for figure, by_cores in figures.items():
        unit, better = units[figure]
        for cores, sides in by_cores.items():
            cells = []
            medians = {}
            for side in (peer, "poolgate"):
                values = sides.get(side, [])
                if not values:
                    cells.append(f"{'-':>30}")
                    continue
                median = statistics.median(values)
                medians[side] = median
                spread = (max(values) - min(values)) / median * 100 if median else 0
                cell = f"{fmt(median)} [{fmt(min(values))}-{fmt(max(values))}]"
                if len(values) > 1:
                    cell += f" ±{spread / 2:.0f}%"
                cells.append(f"{cell:>30}")
            ratio = "-"
            if medians.get(peer) and "poolgate" in medians:
                ratio = f"{medians['poolgate'] / medians[peer]:.2f}x"
            paired = "-"
            rounds = list(zip(sides.get(peer, []), sides.get("poolgate", [])))
            ratios = [ours / theirs for theirs, ours in rounds if theirs]
            if len(ratios) > 1 and len(ratios) == len(rounds):
                paired = f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"
            print(f"{figure:<34} {cores:>5}  {cells[0]}  {cells[1]}  {ratio:>6}  {paired:>20}")
            scaling.setdefault(figure, OrderedDict())[cores] = medians
        note = f"{unit}, {better} is better" if better in ("higher", "lower") else unit
        print(f"{'':<34} {'':>5}  ({note})")
    all_cores = sorted({c for by in scaling.values() for c in by})
    if len(all_cores) > 1:
        print()
        print(f"{'scaling (medians)':<34} " + "  ".join(f"{f'{peer}@{c}':>12} {f'poolgate@{c}':>12}" for c in all_cores))
        for figure, by_cores in scaling.items():
            cells = []
            for c in all_cores:
                medians = by_cores.get(c, {})
                cells.append(
                    f"{fmt(medians[peer]) if peer in medians else '-':>12} "
                    f"{fmt(medians['poolgate']) if 'poolgate' in medians else '-':>12}"
                )
            print(f"{figure:<34} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
