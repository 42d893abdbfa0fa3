# runc/card_range.awk - the -r value of `run -m calc` (the operands a model trained on) from its model
# card, for `make run` and `make calc`: "0-89:90-99" for the card's task {"lo": 0, "hi": 89,
# "holdout": [90, 99]}, "LO-HI,BLO-BHI..." when the second operand has its own range. Prints
# nothing when the card has no arith or count task (tinymath.tasks.spec.range_note's rule),
# so the calculator then answers without notices. POSIX awk; no JSON parser: it reads the card as
# tinymath's write_json lays it out (two-space indent), the top-level "task" object.
{ text = text $0 "\n" }
END {
    i = index(text, "\n  \"task\": {")
    if (i == 0) exit
    s = substr(text, i + 1)
    j = index(s, "\n  }")
    if (j == 0) exit
    s = substr(s, 1, j)
    gsub(/[ \t\n\r]/, "", s)
    gsub(/"exclude":\{[^{}]*\}/, "", s)  # a nested task spec (problems kept out of training) has its own keys
    if (s !~ /"task":"(arith|count)"/) exit
    lo = num(s, "lo"); hi = num(s, "hi")
    if (lo == "" || hi == "") exit
    out = lo "-" hi
    blo = num(s, "b_lo"); bhi = num(s, "b_hi")
    if (blo != "" || bhi != "") out = out "," (blo != "" ? blo : lo) "-" (bhi != "" ? bhi : hi)
    if (match(s, /"holdout":\[[0-9]+,[0-9]+\]/)) {
        h = substr(s, RSTART + 11, RLENGTH - 12)
        sub(/,/, "-", h)
        out = out ":" h
    }
    print out
}
# the integer value of "key": in s, or "" (null, absent)
function num(s, key,    m) {
    if (!match(s, "\"" key "\":[0-9]+")) return ""
    m = substr(s, RSTART, RLENGTH)
    sub(/.*:/, "", m)
    return m
}
