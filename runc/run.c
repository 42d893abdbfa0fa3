/*
 * run.c - TinyMath's command-line runner, on top of the runc library.
 *
 * llama2.c's flags (-t -p -s -n -i -z -m generate|chat) plus two modes for
 * problems: -m calc (an interactive calculator: "36 / 3" -> "12.00") and
 * -m batch (one prompt per line from -f FILE or stdin, one answer per line).
 * Both print the final answer (runc_final_answer: what follows the last '#'
 * of a model that shows its work); -v prints the whole answer, steps included.
 * calc -r LO-HI[,BLO-BHI][:HLO-HHI] (the operand range the model trained on, which
 * `make calc` reads from the model card) adds a notice to the answer of a problem
 * with an operand outside it or held out: "101.00  (note: 100 is outside the trained
 * range 0-89)", the words of tinymath.tasks.spec.range_note.
 *
 * Every bad input ends in one line on stderr naming the problem and a
 * non-zero exit status. The library never prints or exits; this file does.
 */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>
#define HAVE_POSIX 1
#else
#define HAVE_POSIX 0
#endif

#include "runc.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_MODEL "models/tinymath.bin"

/* An input line holds at most this many bytes (a prompt is far shorter): a
 * longer one ends the input with an error, so that /dev/zero or a file with
 * no newlines cannot grow memory without bound. */
#define MAX_LINE ((size_t)1 << 20)

static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("run: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_FAILURE);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: run [model.bin] [options]   (model default: " DEFAULT_MODEL ")\n"
            "example: run model.bin -m calc\n"
            "options:\n"
            "  -t <float>  temperature in [0,inf), default 1.0 (0 = greedy)\n"
            "  -p <float>  top-p in [0,1], default 0.9 (0 or 1 = off)\n"
            "  -s <int>    random seed, default time(NULL)\n"
            "  -n <int>    number of positions to run (prompt included), default 0 = the whole context\n"
            "  -i <string> input prompt (calc: answer this one problem and exit)\n"
            "  -z <string> tokenizer, default tokenizer.bin beside the model\n"
            "  -m <string> mode: generate|chat|calc|batch, default generate\n"
            "  -y <string> system prompt in chat mode\n"
            "  -f <string> batch mode: file of prompts, one per line (default stdin)\n"
            "  -j <int>    batch mode: worker threads, default 0 = one per CPU core\n"
            "  -l <int>    calc and batch: at most this many tokens per answer, default %d\n"
            "  -v          calc and batch: print the whole answer, the steps of a model that shows its work\n"
            "              included (default: the final answer, what follows the last '#')\n"
            "  -r <range>  calc: the operands the model trained on, LO-HI (both operands), LO-HI,BLO-BHI\n"
            "              (the second operand's own range), then :HLO-HHI for a held-out range, e.g.\n"
            "              0-89:90-99; a problem with another operand is answered with a notice\n"
            "calc and batch answer greedily, stopping at EOS: prompt \"36 / 3 =\" -> \"12.00\";\n"
            "a steps model's \"76 * 56 =\" -> \"4256.00\" (with -v: \"6*6=36 ... 3+1=4#4256.00\").\n"
            "Input lines are at most %lu bytes; a line holding a NUL byte is refused.\n",
            (int)RUNC_DEFAULT_MAX_ANSWER, (unsigned long)MAX_LINE);
}

/* ---- argument parsing ------------------------------------------------------ */

static float parse_float(const char *flag, const char *s)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
        die("bad value for %s: '%s' is not a number", flag, s);
    return (float)v;
}

static long parse_long(const char *flag, const char *s)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE) die("bad value for %s: '%s' is not an integer", flag, s);
    return v;
}

static unsigned long long parse_seed(const char *s)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || s[0] == '-')
        die("bad value for -s: '%s' is not a non-negative integer", s);
    return v;
}

/* -r: the operand ranges a model trained on (inclusive); held.lo > held.hi: none held out */
typedef struct {
    int on;
    long a_lo, a_hi, b_lo, b_hi, h_lo, h_hi;
} trained_range;

/* "LO-HI" at *s (non-negative integers): 1 and *s past it, or 0 */
static int parse_span(const char **s, long *lo, long *hi)
{
    char *end;
    if (!isdigit((unsigned char)**s)) return 0;
    errno = 0;
    *lo = strtol(*s, &end, 10);
    if (errno == ERANGE || *end != '-' || !isdigit((unsigned char)end[1])) return 0;
    *hi = strtol(end + 1, &end, 10);
    if (errno == ERANGE || *lo > *hi) return 0;
    *s = end;
    return 1;
}

static trained_range parse_range(const char *arg)
{
    trained_range t;
    const char *s = arg;
    t.on = 1;
    t.h_lo = 1;
    t.h_hi = 0;
    if (!parse_span(&s, &t.a_lo, &t.a_hi)) goto bad;
    t.b_lo = t.a_lo;
    t.b_hi = t.a_hi;
    if (*s == ',' && (s++, !parse_span(&s, &t.b_lo, &t.b_hi))) goto bad;
    if (*s == ':' && (s++, !parse_span(&s, &t.h_lo, &t.h_hi))) goto bad;
    if (*s == '\0') return t;
bad:
    die("bad value for -r: '%s' (expected LO-HI, LO-HI,BLO-BHI or either with :HLO-HHI for a held-out "
        "range, non-negative integers with LO <= HI, e.g. 0-89:90-99)", arg);
    return t;
}

/* "dir/model.bin" -> "dir/tokenizer.bin"; "model.bin" -> "tokenizer.bin" */
static char *default_tokenizer(const char *model_path)
{
    const char *slash = strrchr(model_path, '/');
    size_t dir = slash ? (size_t)(slash - model_path + 1) : 0;
    char *p = (char *)malloc(dir + sizeof "tokenizer.bin");
    if (!p) die("out of memory");
    memcpy(p, model_path, dir);
    memcpy(p + dir, "tokenizer.bin", sizeof "tokenizer.bin");
    return p;
}

/* ---- helpers ----------------------------------------------------------------- */

static double now_seconds(void)
{
#if HAVE_POSIX
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#else
    return (double)time(NULL);
#endif
}

static int interactive(void)
{
#if HAVE_POSIX
    return isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
#else
    return 0;
#endif
}

/* Print a piece, skipping lone bytes that are control codes (a raw byte
 * token can be a backspace, a bell, half a UTF-8 sequence, ...). */
static void print_piece(const char *piece, size_t len)
{
    if (len == 0) return;
    if (len == 1) {
        unsigned char b = (unsigned char)piece[0];
        if (b < 0x80 && !(isprint(b) || isspace(b))) return;
    }
    fwrite(piece, 1, len, stdout);
}

/* The input being read: the last line, whether it held a NUL byte (a prompt
 * cannot: it would be cut there), and whether reading stopped at an over-long
 * line. */
typedef struct {
    char *buf;
    size_t cap;
    long nul;        /* offset of the line's first NUL byte, or -1 */
    int too_long;    /* reading stopped: a line over MAX_LINE bytes */
    int lineno;      /* lines read */
} line_reader;

/* One line of at most MAX_LINE bytes, without its newline (and \r); NULL at
 * end of input, or at a line over MAX_LINE bytes (in->too_long set). */
static char *read_line(FILE *f, line_reader *in)
{
    char **buf = &in->buf;
    size_t *cap = &in->cap;
    size_t n = 0;
    int ch;
    in->nul = -1;
    if (in->too_long) return NULL;
    while ((ch = fgetc(f)) != EOF) {
        if (ch == '\n') break;
        if (n >= MAX_LINE) {
            in->too_long = 1;
            return NULL;
        }
        if (ch == '\0' && in->nul < 0) in->nul = (long)n;
        if (n + 2 > *cap) {
            size_t ncap = *cap ? 2 * *cap : 256;
            char *grown = (char *)realloc(*buf, ncap);
            if (!grown) die("out of memory reading input");
            *buf = grown;
            *cap = ncap;
        }
        (*buf)[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) return NULL;
    if (!*buf) { /* an empty line at the very start */
        *buf = (char *)malloc(1);
        if (!*buf) die("out of memory");
        *cap = 1;
    }
    if (n > 0 && (*buf)[n - 1] == '\r') n--;
    (*buf)[n] = '\0';
    in->lineno++;
    return *buf;
}

/* The error of a line holding a NUL byte, or of the input stopped at an over-long line. */
static void nul_error(const line_reader *in, const char *where)
{
    fprintf(stderr, "run: %sholds a NUL byte (at byte %ld): refused (a prompt would be cut there)\n", where, in->nul);
}

static void too_long_error(const line_reader *in, const char *what)
{
    die("%s: line %d is over %lu bytes without a newline (not a file of prompts?): stopped reading", what,
        in->lineno + 1, (unsigned long)MAX_LINE);
}

/* Trim surrounding whitespace in place. */
static char *trim(char *s)
{
    char *end;
    while (*s && isspace((unsigned char)*s)) s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) end--;
    *end = '\0';
    return s;
}

/* ---- modes ------------------------------------------------------------------- */

typedef struct {
    runc_model *model;
    runc_tokenizer *tok;
    runc_state *state;
    runc_sampler *sampler;
    int vocab_size;
    int context;
    int steps;
    int verbose;   /* calc and batch: the whole answer (steps), not only the final answer */
    int max_answer; /* calc and batch: the most tokens an answer may generate */
    trained_range range; /* calc: -r, the operands the model trained on (range.on = 0: not given) */
} runner;

/* What calc and batch print of an answer: all of it (-v), or its final answer. */
static const char *shown(const runner *r, const char *answer)
{
    return r->verbose ? answer : answer + runc_final_answer(answer);
}

static void generate(runner *r, const char *prompt)
{
    runc_error err;
    int *ids, n_ids, pos, token, next;
    double start = 0;
    size_t cap = strlen(prompt) + 3;
    ids = (int *)malloc(cap * sizeof *ids);
    if (!ids) die("out of memory");
    if (runc_encode(r->tok, prompt, 1, 0, ids, (int)cap, &n_ids, &err) != RUNC_OK) die("prompt: %s", err.message);
    if (n_ids >= r->context)
        die("prompt is %d tokens (with BOS); the context holds %d", n_ids, r->context);
    if (n_ids >= r->steps) die("prompt is %d tokens (with BOS); -n %d leaves no room to generate", n_ids, r->steps);

    token = ids[0];
    for (pos = 0; pos < r->steps; pos++) {
        const float *logits;
        const char *piece;
        size_t len;
        if (runc_forward(r->state, token, pos, &logits, &err) != RUNC_OK) die("%s", err.message);
        if (pos + 1 < n_ids) {
            next = ids[pos + 1]; /* still forcing the prompt */
        } else {
            runc_sample(r->sampler, logits, &next, NULL);
            /* EOS ends the answer; a new BOS would start another sequence */
            if (next == RUNC_TOKEN_EOS || next == RUNC_TOKEN_BOS) break;
        }
        runc_decode_piece(r->tok, token, next, &piece, &len);
        print_piece(piece, len);
        fflush(stdout);
        token = next;
        if (pos == 0) start = now_seconds(); /* the first step may include lazy paging */
    }
    printf("\n");
    if (pos > 1 && now_seconds() > start)
        fprintf(stderr, "achieved tok/s: %f\n", (pos - 1) / (now_seconds() - start));
    free(ids);
}

static void chat(runner *r, const char *first_prompt, const char *system_prompt)
{
    static const char sys_template[] = "[INST] <<SYS>>\n%s\n<</SYS>>\n\n%s [/INST]";
    static const char user_template[] = "[INST] %s [/INST]";
    char *text = NULL;
    line_reader in;
    int *ids = NULL, pos = 0, turn = 0;
    runc_error err;

    memset(&in, 0, sizeof in);
    for (;;) {
        const char *user;
        size_t need;
        int n_ids, i, token;
        const float *logits;
        if (turn == 0 && first_prompt) {
            user = first_prompt;
        } else {
            printf("User: ");
            fflush(stdout);
            user = read_line(stdin, &in);
            if (in.too_long) too_long_error(&in, "stdin");
            if (!user) break;
            if (in.nul >= 0) die("chat: the line holds a NUL byte (at byte %ld)", in.nul);
        }
        need = strlen(user) + (system_prompt ? strlen(system_prompt) : 0) + sizeof sys_template;
        free(text);
        free(ids);
        text = (char *)malloc(need);
        ids = (int *)malloc((need + 3) * sizeof *ids);
        if (!text || !ids) die("out of memory");
        if (turn == 0 && system_prompt && *system_prompt) snprintf(text, need, sys_template, system_prompt, user);
        else snprintf(text, need, user_template, user);
        if (runc_encode(r->tok, text, 1, 0, ids, (int)need + 3, &n_ids, &err) != RUNC_OK)
            die("chat: %s", err.message);
        if (pos + n_ids >= r->steps) {
            fprintf(stderr, "run: the context is full (%d positions); ending the chat\n", r->steps);
            break;
        }
        for (i = 0; i < n_ids; i++)
            if (runc_forward(r->state, ids[i], pos++, &logits, &err) != RUNC_OK) die("%s", err.message);
        printf("Assistant: ");
        token = ids[n_ids - 1];
        while (pos < r->steps) {
            const char *piece;
            size_t len;
            int next;
            runc_sample(r->sampler, logits, &next, NULL);
            if (next == RUNC_TOKEN_EOS) break;
            runc_decode_piece(r->tok, token, next, &piece, &len);
            print_piece(piece, len);
            fflush(stdout);
            if (runc_forward(r->state, next, pos++, &logits, &err) != RUNC_OK) die("%s", err.message);
            token = next;
        }
        printf("\n");
        turn++;
        if (pos >= r->steps) {
            fprintf(stderr, "run: the context is full (%d positions); ending the chat\n", r->steps);
            break;
        }
    }
    free(in.buf);
    free(text);
    free(ids);
}

static const char *number_at(const char *s, size_t *i, size_t *len);

/* Answer one problem; prints the answer line (with its notice, when there is one), or an error line
 * and returns 0. */
static int answer_noted(runner *r, const char *prompt, char *answer, size_t cap, const char *where,
                        const char *note)
{
    runc_error err;
    if (runc_solve(r->state, r->tok, prompt, answer, cap, NULL, &err) != RUNC_OK) {
        fprintf(stderr, "run: %s%s\n", where, err.message);
        return 0;
    }
    if (note && *note) printf("%s  (note: %s)\n", shown(r, answer), note);
    else printf("%s\n", shown(r, answer));
    fflush(stdout);
    return 1;
}

static int answer_one(runner *r, const char *prompt, char *answer, size_t cap, const char *where)
{
    return answer_noted(r, prompt, answer, cap, where, NULL);
}

/* The notice for one operand (digits d, d_len of them, no leading zeros), appended to note (cap bytes,
 * large enough: see range_note); nothing when it is in its trained range. */
static void operand_note(const trained_range *t, const char *d, size_t d_len, long lo, long hi, char *note,
                         size_t cap)
{
    char one[160];
    long x = 0;
    size_t k, used = strlen(note);
    int huge = 0; /* beyond what a long holds (32 bits on armhf): outside any range -r can give */
    for (k = 0; !huge && k < d_len; k++) {
        if (x > (LONG_MAX - 9) / 10) huge = 1;
        else x = x * 10 + (d[k] - '0');
    }
    if (d_len > 40) return; /* no notice quotes a number this long (calc_prompt keeps typed text as is) */
    if (!huge && t->h_lo <= x && x <= t->h_hi)
        sprintf(one, "%.*s is a held-out operand (never trained on)", (int)d_len, d);
    else if (huge || x < lo || x > hi)
        sprintf(one, "%.*s is outside the trained range %ld-%ld", (int)d_len, d, lo, hi);
    else
        return;
    if (strcmp(note, one) == 0) return; /* "100 + 100": one notice (note holds at most the first) */
    if (used + strlen(one) + 3 > cap) return;
    if (used) strcat(note, "; ");
    strcat(note, one);
}

/* calc -r: the notice for a normalised prompt "A op B =" (calc_prompt's form), in note (cap >= 400
 * bytes); empty when both operands were trained on, or the prompt has another shape. */
static void range_note(const runner *r, const char *prompt, char *note, size_t cap)
{
    size_t i = 0, alen = 0, blen = 0;
    const char *a, *b;
    note[0] = '\0';
    if (!r->range.on) return;
    a = number_at(prompt, &i, &alen);
    if (!a || prompt[i] != ' ' || !prompt[i + 1] || !strchr("+-*/", prompt[i + 1]) || prompt[i + 2] != ' ') return;
    i += 3;
    b = number_at(prompt, &i, &blen);
    if (!b || strcmp(prompt + i, " =") != 0) return;
    operand_note(&r->range, a, alen, r->range.a_lo, r->range.a_hi, note, cap);
    operand_note(&r->range, b, blen, r->range.b_lo, r->range.b_hi, note, cap);
}

/* The digits of s from *i on, without leading zeros (at least one digit kept): where they start, and
 * their count in *len; NULL when s[*i] is not a digit. *i moves past them. */
static const char *number_at(const char *s, size_t *i, size_t *len)
{
    const char *start;
    if (!isdigit((unsigned char)s[*i])) return NULL;
    while (s[*i] == '0' && isdigit((unsigned char)s[*i + 1])) (*i)++;
    start = s + *i;
    while (isdigit((unsigned char)s[*i])) (*i)++;
    *len = (size_t)(s + *i - start);
    return start;
}

static void skip_spaces(const char *s, size_t *i)
{
    while (s[*i] == ' ' || s[*i] == '\t') (*i)++;
}

/* calc: what a person types, in the prompt form the models were trained on (the rule of
 * tinymath.tasks.typed_prompt): "24+82", "  12   +   3" and "5+5=" become "24 + 82 =",
 * "12 + 3 =" and "5 + 5 ="; text of another shape gets its closing " =" (after trimming). */
static char *calc_prompt(const char *line)
{
    size_t n = strlen(line), i = 0, alen = 0, blen = 0;
    const char *a, *b = NULL;
    char op = 0;
    char *p = (char *)malloc(n + 5); /* "24+82" -> "24 + 82 =": at most 4 bytes more, and the NUL */
    if (!p) die("out of memory");
    skip_spaces(line, &i);
    a = number_at(line, &i, &alen);
    if (a) {
        skip_spaces(line, &i);
        if (line[i] && strchr("+-*/", line[i])) {
            op = line[i++];
            skip_spaces(line, &i);
            b = number_at(line, &i, &blen);
        }
    }
    if (b) {
        skip_spaces(line, &i);
        if (line[i] == '=') i++;
        skip_spaces(line, &i);
    }
    if (b && line[i] == '\0') {
        sprintf(p, "%.*s %c %.*s =", (int)alen, a, op, (int)blen, b);
        return p;
    }
    memcpy(p, line, n + 1);
    if (n == 0 || line[n - 1] != '=') memcpy(p + n, n ? " =" : "=", 3);
    return p;
}

static int calc(runner *r, const char *single)
{
    char note[400];
    size_t cap = runc_answer_cap(r->state, r->tok);
    char *answer = (char *)malloc(cap), *prompt;
    int ok = 1, tty = interactive();
    line_reader in;
    memset(&in, 0, sizeof in);
    if (!answer) die("out of memory");
    if (single) {
        char *copy = (char *)malloc(strlen(single) + 1);
        if (!copy) die("out of memory");
        strcpy(copy, single);
        if (*trim(copy) == '\0') { /* no problem to answer ("=" alone is not one) */
            fprintf(stderr, "run: empty problem: give one like -i \"36 / 3\"\n");
            ok = 0;
        } else {
            prompt = calc_prompt(trim(copy));
            range_note(r, prompt, note, sizeof note);
            ok = answer_noted(r, prompt, answer, cap, "", note);
            free(prompt);
        }
        free(copy);
        free(answer);
        return ok;
    }
    if (tty) fprintf(stderr, "TinyMath calculator: type a problem like 36 / 3, end with Ctrl-D\n");
    for (;;) {
        char *text;
        if (tty) {
            printf("> ");
            fflush(stdout);
        }
        if (!read_line(stdin, &in)) break;
        if (in.nul >= 0) {
            nul_error(&in, "the line ");
            ok = 0;
            continue;
        }
        text = trim(in.buf);
        if (*text == '\0') continue;
        prompt = calc_prompt(text);
        range_note(r, prompt, note, sizeof note);
        if (!answer_noted(r, prompt, answer, cap, "", note)) ok = 0;
        free(prompt);
    }
    if (tty) printf("\n");
    free(in.buf);
    free(answer);
    if (in.too_long) too_long_error(&in, "stdin");
    return ok;
}

/* batch: every input line gets exactly one output line (empty on error).
 * Lines are answered by the batch engine in chunks (the same answers as
 * runc_solve's, many times faster), which reports each line's error as data.
 * From a terminal, one line at a time. */
#define BATCH_CHUNK 4096

static int batch_one_by_one(runner *r, FILE *f)
{
    size_t cap = runc_answer_cap(r->state, r->tok);
    char *answer = (char *)malloc(cap), where[64];
    int ok = 1;
    line_reader in;
    memset(&in, 0, sizeof in);
    if (!answer) die("out of memory");
    while (read_line(f, &in)) {
        snprintf(where, sizeof where, "line %d: ", in.lineno);
        if (in.nul >= 0) {
            nul_error(&in, where);
            printf("\n");
            ok = 0;
            continue;
        }
        if (*trim(in.buf) == '\0') { /* a blank line stays a blank line */
            printf("\n");
            continue;
        }
        if (!answer_one(r, trim(in.buf), answer, cap, where)) {
            printf("\n");
            ok = 0;
        }
    }
    free(in.buf);
    free(answer);
    if (in.too_long) too_long_error(&in, "stdin");
    return ok;
}

/* Answer lines[0..n) (blank lines stay blank); first_lineno numbers lines[0].
 * A line that fails gets an empty line and its own error (errors[k]) on stderr;
 * so does a line holding a NUL byte (nuls[i] >= 0: its offset), not solved. */
static int batch_chunk(const runner *r, runc_batch *b, char **lines, const long *nuls, int n, int first_lineno,
                       char *answers, size_t cap, const char **prompts, runc_error *errors)
{
    int i, m = 0, ok = 1;
    for (i = 0; i < n; i++)
        if (nuls[i] < 0 && *lines[i] != '\0') prompts[m++] = lines[i];
    /* every line's status is in errors (the call's own status is the lowest
     * failing line's: its arguments are always valid here) */
    if (m) runc_batch_solve(b, prompts, m, answers, cap, NULL, NULL, NULL, errors, NULL);
    for (i = 0, m = 0; i < n; i++) {
        const runc_error *e;
        if (nuls[i] >= 0) {
            fprintf(stderr, "run: line %d: holds a NUL byte (at byte %ld): refused (a prompt would be cut there)\n",
                    first_lineno + i, nuls[i]);
            printf("\n");
            ok = 0;
            continue;
        }
        if (*lines[i] == '\0') {
            printf("\n");
            continue;
        }
        e = &errors[m];
        if (e->code != RUNC_OK) {
            fprintf(stderr, "run: line %d: %s\n", first_lineno + i, e->message);
            printf("\n");
            ok = 0;
        } else {
            printf("%s\n", shown(r, answers + (size_t)m * cap));
        }
        m++;
    }
    fflush(stdout);
    return ok;
}

/* A chunk also ends once its lines hold this many bytes (lines are up to MAX_LINE). */
#define BATCH_CHUNK_BYTES ((size_t)16 << 20)

static int batch(runner *r, const char *path, int threads)
{
    FILE *f = stdin;
    int ok = 1;
    if (path) {
        f = fopen(path, "r");
        if (!f) die("%s: cannot open: %s", path, strerror(errno));
    }
    if (path || !interactive()) {
        runc_batch *b = NULL;
        runc_batch_options opt;
        runc_error err, *errors = (runc_error *)calloc(BATCH_CHUNK, sizeof *errors);
        char **lines = (char **)calloc(BATCH_CHUNK, sizeof *lines), *answers;
        const char **prompts = (const char **)calloc(BATCH_CHUNK, sizeof *prompts);
        long *nuls = (long *)calloc(BATCH_CHUNK, sizeof *nuls);
        size_t cap, chunk_bytes = 0, *caps = (size_t *)calloc(BATCH_CHUNK, sizeof *caps);
        int n = 0;
        line_reader in;
        memset(&in, 0, sizeof in);
        memset(&opt, 0, sizeof opt);
        opt.threads = threads;
        if (runc_batch_open(&b, r->model, r->tok, &opt, &err) != RUNC_OK) die("%s", err.message);
        if (runc_batch_set_max_answer(b, r->max_answer, &err) != RUNC_OK) die("%s", err.message);
        cap = runc_batch_answer_cap(b);
        answers = (char *)malloc(cap * BATCH_CHUNK);
        if (!lines || !prompts || !caps || !answers || !errors || !nuls) die("out of memory");
        for (;;) {
            int more = read_line(f, &in) != NULL;
            if (more) {
                const char *t = trim(in.buf);
                size_t len = strlen(t) + 1;
                if (len > caps[n]) {
                    char *grown = (char *)realloc(lines[n], len);
                    if (!grown) die("out of memory");
                    lines[n] = grown;
                    caps[n] = len;
                }
                memcpy(lines[n], t, len);
                nuls[n++] = in.nul;
                chunk_bytes += len;
            }
            if (n == BATCH_CHUNK || chunk_bytes >= BATCH_CHUNK_BYTES || (!more && n > 0)) {
                if (!batch_chunk(r, b, lines, nuls, n, in.lineno - n + 1, answers, cap, prompts, errors)) ok = 0;
                n = 0;
                chunk_bytes = 0;
            }
            if (!more) break;
        }
        if (ferror(f)) die("error reading %s", path ? path : "stdin");
        if (in.too_long) too_long_error(&in, path ? path : "stdin");
        for (n = 0; n < BATCH_CHUNK; n++) free(lines[n]);
        free(lines);
        free(caps);
        free(nuls);
        free(prompts);
        free(answers);
        free(errors);
        free(in.buf);
        runc_batch_close(b);
    } else {
        ok = batch_one_by_one(r, f);
        if (ferror(f)) die("error reading %s", path ? path : "stdin");
    }
    if (f != stdin) fclose(f);
    return ok;
}

/* ---- main ---------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *model_path = DEFAULT_MODEL, *tok_arg = NULL, *prompt = NULL, *mode = "generate";
    const char *system_prompt = NULL, *batch_file = NULL;
    float temperature = 1.0f, topp = 0.9f;
    unsigned long long seed = 0;
    int seed_given = 0, steps_given = 0, max_answer_given = 0, i = 1, ok = 1;
    long steps = 0, threads = 0, max_answer = 0;
    char *tok_path;
    runner r;
    runc_error err;

    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return EXIT_SUCCESS;
    }
    if (argc >= 2 && argv[1][0] != '-') model_path = argv[i++];
    r.verbose = 0;
    r.range.on = 0;
    for (; i < argc; i += 2) {
        const char *flag = argv[i];
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            usage(stdout);
            return EXIT_SUCCESS;
        }
        if (flag[0] != '-') die("unexpected argument '%s' (the model path goes first; run -h for usage)", flag);
        if (strcmp(flag, "-v") == 0) { /* the one flag without a value */
            r.verbose = 1;
            i--;
            continue;
        }
        if (strlen(flag) != 2 || !strchr("tpsnizmyfjlr", flag[1]))
            die("unknown flag '%s' (run -h for usage)", flag);
        if (i + 1 >= argc) die("flag %s needs a value", flag);
        switch (flag[1]) {
        case 't': temperature = parse_float(flag, argv[i + 1]); break;
        case 'p': topp = parse_float(flag, argv[i + 1]); break;
        case 's': seed = parse_seed(argv[i + 1]); seed_given = 1; break;
        case 'n': steps = parse_long(flag, argv[i + 1]); steps_given = 1; break;
        case 'i': prompt = argv[i + 1]; break;
        case 'z': tok_arg = argv[i + 1]; break;
        case 'm': mode = argv[i + 1]; break;
        case 'y': system_prompt = argv[i + 1]; break;
        case 'f': batch_file = argv[i + 1]; break;
        case 'j': threads = parse_long(flag, argv[i + 1]); break;
        case 'l': max_answer = parse_long(flag, argv[i + 1]); max_answer_given = 1; break;
        case 'r': r.range = parse_range(argv[i + 1]); break;
        default: break;
        }
    }
    if (strcmp(mode, "generate") && strcmp(mode, "chat") && strcmp(mode, "calc") && strcmp(mode, "batch"))
        die("unknown mode '%s' (generate, chat, calc or batch)", mode);
    if (temperature < 0.0f) die("temperature %g must be >= 0", (double)temperature);
    if (topp < 0.0f || topp > 1.0f) die("top-p %g must be in [0, 1]", (double)topp);
    if (steps < 0) die("-n %ld must be >= 0", steps);
    if (batch_file && strcmp(mode, "batch") != 0) die("-f is for -m batch");
    if (r.range.on && strcmp(mode, "calc") != 0) die("-r is for -m calc");
    if (r.verbose && strcmp(mode, "calc") != 0 && strcmp(mode, "batch") != 0) die("-v is for -m calc and -m batch");
    if (threads < 0 || threads > RUNC_BATCH_MAX_THREADS)
        die("-j %ld must be in 0..%d (0 = one thread per CPU core)", threads, (int)RUNC_BATCH_MAX_THREADS);
    if (max_answer_given && (max_answer < 1 || max_answer > RUNC_MAX_SEQ_LEN))
        die("-l %ld must be in 1..%d (tokens per answer)", max_answer, (int)RUNC_MAX_SEQ_LEN);
    if (max_answer_given && strcmp(mode, "calc") != 0 && strcmp(mode, "batch") != 0)
        die("-l is for -m calc and -m batch (-n bounds generate and chat)");
    r.max_answer = (int)max_answer;
    if (!seed_given) seed = (unsigned long long)time(NULL);

    if (runc_model_open(&r.model, model_path, 0, &err) != RUNC_OK) die("%s", err.message);
    r.vocab_size = runc_model_config(r.model)->vocab_size;
    r.context = runc_model_config(r.model)->max_seq_len;
    if (!steps_given || steps == 0) {
        r.steps = r.context;
    } else if (steps > r.context) {
        fprintf(stderr, "run: warning: -n %ld exceeds the model's context of %d positions; using %d\n", steps,
                r.context, r.context);
        r.steps = r.context;
    } else {
        r.steps = (int)steps;
    }
    tok_path = tok_arg ? NULL : default_tokenizer(model_path);
    if (runc_tokenizer_open(&r.tok, tok_arg ? tok_arg : tok_path, r.vocab_size, &err) != RUNC_OK)
        die("%s", err.message);
    if (runc_state_open(&r.state, r.model, 0, &err) != RUNC_OK) die("%s", err.message);
    if (runc_state_set_max_answer(r.state, r.max_answer, &err) != RUNC_OK) die("%s", err.message);
    if (runc_sampler_open(&r.sampler, r.vocab_size, temperature, topp, seed, &err) != RUNC_OK)
        die("%s", err.message);

    if (strcmp(mode, "generate") == 0) generate(&r, prompt ? prompt : "");
    else if (strcmp(mode, "chat") == 0) chat(&r, prompt, system_prompt);
    else if (strcmp(mode, "calc") == 0) ok = calc(&r, prompt);
    else ok = batch(&r, batch_file, (int)threads);

    runc_sampler_close(r.sampler);
    runc_state_close(r.state);
    runc_tokenizer_close(r.tok);
    runc_model_close(r.model);
    free(tok_path);
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
