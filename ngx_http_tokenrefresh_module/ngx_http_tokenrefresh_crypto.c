
/*
 * Copyright (C) ngx_http_tokenrefresh_module authors
 *
 * Cryptography, all of it through OpenSSL: token fingerprints for logs
 * and the status page.
 */


#include "ngx_http_tokenrefresh_module.h"

#include <openssl/evp.h>


/*
 * The first bytes of the SHA-256 of a token, in hex: enough to tell two
 * tokens apart in a log, useless to an attacker.
 */

void
ngx_http_tokenrefresh_fingerprint(u_char *dst, u_char *data, size_t len)
{
    u_char        md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        ngx_memset(dst, '?', NGX_HTTP_TOKENREFRESH_FP_LEN);
        return;
    }

    ngx_hex_dump(dst, md, NGX_HTTP_TOKENREFRESH_FP_LEN / 2);
}
