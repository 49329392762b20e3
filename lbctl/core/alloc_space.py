"""Free-address index of one pool and family for lbctl.core.allocator: cost independent of size.

Free space is kept as sorted disjoint inclusive intervals, never as a set of addresses, so a /8 or
a /64 costs what a /24 does. The intervals live in chunks of at most 2 x _LOAD (a sorted list of
sorted lists, as in sortedcontainers): a flat list would memmove ~3 us per insert at 32,768
intervals and ~55 us at 500,000; a chunk caps that at a few hundred pointers whatever the
fragmentation. With avoid-buggy-IPs (IPv4 .0 and .255, MetalLB's rule), no interval starts or ends
on a buggy address, so the lowest free address is always the first interval's start; buggy
addresses may sit inside an interval but are never handed out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

# Intervals per chunk before it splits at 2 x _LOAD: bisect stays cheap, memmove stays ~1 KiB.
_LOAD = 128


def _usable_upto(n: int, avoid_buggy: bool) -> int:
    """Usable addresses in [0, n]: O(1)."""
    if n < 0:
        return 0
    if not avoid_buggy:
        return n + 1
    full, rest = divmod(n + 1, 256)
    # In each full block of 256, .0 and .255 are buggy; a partial block has only .0 buggy.
    return full * 254 + max(rest - 1, 0)


class FreeSpace:
    """Which addresses of a pool's ranges (one family) are free; ints, not ipaddress objects."""

    __slots__ = ("_buggy", "_ce", "_count", "_cs", "_mins", "_re", "_rs", "size", "used")

    def __init__(self, ranges: Iterable[tuple[int, int]], avoid_buggy: bool = False) -> None:
        spans = sorted(ranges)
        self._buggy = avoid_buggy
        self._rs = [a for a, _ in spans]
        self._re = [b for _, b in spans]
        self.size = sum(
            _usable_upto(b, avoid_buggy) - _usable_upto(a - 1, avoid_buggy) for a, b in spans
        )
        self.used = 0
        self._cs: list[list[int]] = []  # interval starts, per chunk, ascending
        self._ce: list[list[int]] = []  # interval ends, same shape
        self._mins: list[int] = []  # first start of each chunk (bisect over chunks)
        self._count = 0
        for a, b in spans:
            lo, hi = self._up(a), self._down(b)
            if lo <= hi:
                self._insert(lo, hi)

    def _up(self, n: int) -> int:
        """The lowest usable address >= n (buggy ones come at most two in a row)."""
        if self._buggy:
            r = n & 0xFF
            if r == 0:
                return n + 1
            if r == 0xFF:
                return n + 2
        return n

    def _down(self, n: int) -> int:
        """The highest usable address <= n."""
        if self._buggy:
            r = n & 0xFF
            if r == 0xFF:
                return n - 1
            if r == 0:
                return n - 2
        return n

    # --- chunked sorted storage ----------------------------------------------------------

    def _locate(self, n: int) -> tuple[int, int]:
        """(chunk, index) of the interval with the greatest start <= n; chunk -1 if none."""
        ci = bisect_right(self._mins, n) - 1
        if ci < 0:
            return -1, -1
        return ci, bisect_right(self._cs[ci], n) - 1

    def _next(self, ci: int, j: int) -> tuple[int, int]:
        """The position after (ci, j) (after 'none' when ci is -1); chunk -1 if none."""
        if ci >= 0 and j + 1 < len(self._cs[ci]):
            return ci, j + 1
        return (ci + 1, 0) if ci + 1 < len(self._cs) else (-1, -1)

    def _set_start(self, ci: int, j: int, value: int) -> None:
        self._cs[ci][j] = value
        if j == 0:
            self._mins[ci] = value

    def _delete(self, ci: int, j: int) -> None:
        starts, ends = self._cs[ci], self._ce[ci]
        del starts[j], ends[j]
        self._count -= 1
        if not starts:
            del self._cs[ci], self._ce[ci], self._mins[ci]
        elif j == 0:
            self._mins[ci] = starts[0]

    def _insert(self, start: int, end: int) -> None:
        self._count += 1
        if not self._cs:
            self._cs.append([start])
            self._ce.append([end])
            self._mins.append(start)
            return
        ci = max(bisect_right(self._mins, start) - 1, 0)
        starts, ends = self._cs[ci], self._ce[ci]
        j = bisect_right(starts, start)
        starts.insert(j, start)
        ends.insert(j, end)
        if j == 0:
            self._mins[ci] = start
        if len(starts) > 2 * _LOAD:
            self._cs[ci + 1 : ci + 1] = [starts[_LOAD:]]
            self._ce[ci + 1 : ci + 1] = [ends[_LOAD:]]
            self._mins.insert(ci + 1, starts[_LOAD])
            del starts[_LOAD:], ends[_LOAD:]

    # --- the API the allocator uses --------------------------------------------------------

    @property
    def free(self) -> int:
        return self.size - self.used

    @property
    def intervals(self) -> int:
        """How many free intervals there are (fragmentation, for tests and the bench)."""
        return self._count

    def contains(self, n: int) -> bool:
        """n lies in one of the ranges and is usable (not buggy when avoided)."""
        i = bisect_right(self._rs, n) - 1
        if i < 0 or n > self._re[i]:
            return False
        return not (self._buggy and (n & 0xFF) in (0, 0xFF))

    def is_free(self, n: int) -> bool:
        ci, j = self._locate(n)
        return ci >= 0 and self._ce[ci][j] >= n and self.contains(n)

    def lowest(self) -> int | None:
        """The lowest free address, or None when the space is full."""
        return self._mins[0] if self._mins else None

    def take_lowest(self) -> int | None:
        """Mark the lowest free address used and return it (None when full)."""
        if not self._mins:
            return None
        s = self._mins[0]
        nxt = self._up(s + 1)
        if nxt > self._ce[0][0]:
            self._delete(0, 0)
        else:
            self._cs[0][0] = self._mins[0] = nxt
        self.used += 1
        return s

    def take(self, n: int) -> bool:
        """Mark n used; False (and no change) if n is not a free usable address."""
        ci, j = self._locate(n)
        if ci < 0 or self._ce[ci][j] < n or not self.contains(n):
            return False
        s, e = self._cs[ci][j], self._ce[ci][j]
        left_end = self._down(n - 1) if n > s else s - 1
        right_start = self._up(n + 1) if n < e else e + 1
        has_left, has_right = left_end >= s, right_start <= e
        if has_left:
            self._ce[ci][j] = left_end
            if has_right:
                self._insert(right_start, e)
        elif has_right:
            self._set_start(ci, j, right_start)
        else:
            self._delete(ci, j)
        self.used += 1
        return True

    def give(self, n: int) -> None:
        """Mark a used address of this space free again, merging with its neighbours."""
        ci, j = self._locate(n)  # the interval below n, if any
        if ci >= 0 and self._ce[ci][j] >= n:
            raise ValueError(f"address {n} is already free")
        ai, aj = self._next(ci, j)  # the interval above n, if any
        merge_below = ci >= 0 and self._up(self._ce[ci][j] + 1) == n
        merge_above = ai >= 0 and self._up(n + 1) == self._cs[ai][aj]
        if merge_below and merge_above:
            self._ce[ci][j] = self._ce[ai][aj]
            self._delete(ai, aj)
        elif merge_below:
            self._ce[ci][j] = n
        elif merge_above:
            self._set_start(ai, aj, n)
        else:
            self._insert(n, n)
        self.used -= 1

    def free_intervals(self) -> list[tuple[int, int]]:
        """Free intervals, lowest first (buggy addresses inside them are not free): for tests."""
        return [
            (s, e)
            for starts, ends in zip(self._cs, self._ce, strict=True)
            for s, e in zip(starts, ends, strict=True)
        ]
