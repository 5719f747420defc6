/* Hexadecimal digits, for the decoders that meet them (percent escapes, \u escapes, \x escapes). */
#ifndef UD_CORE_HEX_H
#define UD_CORE_HEX_H

/* The value 0..15 of the hexadecimal digit c (either case), or -1 when c is not one. */
static inline int ud_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
