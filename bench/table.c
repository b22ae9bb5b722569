/*
 * table.c: every family prints its rows as a Markdown table, padded so that
 * it also lines up in a terminal, numbers to the right.
 */
#include <stdarg.h>
#include <string.h>

#include "bench.h"

static void put_row(struct table *t, va_list ap)
{
    int c;
    if (t->rows == TABLE_ROWS)
        die("table: more than %d rows", TABLE_ROWS);
    for (c = 0; c < t->cols; c++)
        snprintf(t->cell[t->rows][c], TABLE_CELL, "%s", va_arg(ap, const char *));
    t->rows++;
}

void table_init(struct table *t, unsigned numeric, int cols, ...)
{
    va_list ap;
    if (cols > TABLE_COLS)
        die("table: more than %d columns", TABLE_COLS);
    t->cols = cols;
    t->rows = 0;
    t->numeric = numeric;
    va_start(ap, cols);
    put_row(t, ap);
    va_end(ap);
}

void table_row(struct table *t, ...)
{
    va_list ap;
    va_start(ap, t);
    put_row(t, ap);
    va_end(ap);
}

const char *cellf(char buf[TABLE_CELL], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, TABLE_CELL, fmt, ap);
    va_end(ap);
    return buf;
}

/* Display width of a UTF-8 string: its lead bytes. */
static int display_width(const char *p)
{
    int len = 0;
    for (; *p; p++)
        len += ((unsigned char)*p & 0xC0) != 0x80;
    return len;
}

void table_print(const struct table *t)
{
    int width[TABLE_COLS] = {0}, r, c, pad, numeric;
    for (r = 0; r < t->rows; r++)
        for (c = 0; c < t->cols; c++)
            if (display_width(t->cell[r][c]) > width[c])
                width[c] = display_width(t->cell[r][c]);
    for (c = 0; c < t->cols; c++)
        if (width[c] < 3)
            width[c] = 3;
    for (r = 0; r < t->rows; r++) {
        for (c = 0; c < t->cols; c++) {
            numeric = (t->numeric >> c) & 1;
            pad = width[c] - display_width(t->cell[r][c]);
            printf("%s", c == 0 ? "| " : " | ");
            if (numeric)
                printf("%*s%s", pad, "", t->cell[r][c]);
            else
                printf("%s%*s", t->cell[r][c], pad, "");
        }
        printf(" |\n");
        /* The header's underline: dashes, a colon on the right of numbers. */
        if (r == 0) {
            for (c = 0; c < t->cols; c++) {
                numeric = (t->numeric >> c) & 1;
                printf("%s", c == 0 ? "| " : " | ");
                for (pad = 0; pad < width[c] - numeric; pad++)
                    putchar('-');
                printf("%s", numeric ? ":" : "");
            }
            printf(" |\n");
        }
    }
}
