# The fuzz corpus (fuzz/corpus, written by fuzz/make-corpus.pl), replayed
# through nginx as token responses: ok-* must be stored and used, bad-*
# refused with 502, and nothing may crash.  Under "make test-asan" this
# also checks every byte read.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: every corpus file, through the module's parser and store
--- config
    location = /_rfc {
        internal;
        proxy_pass http://idp/_mock/corpus/$tokenrefresh_credential;
    }

    location = /_nested {
        internal;
        tokenrefresh_json_access_token /data/accessToken;
        tokenrefresh_json_refresh_token /data/refreshToken;
        tokenrefresh_json_expires_at /data/accessTokenExp ms;
        proxy_pass http://idp/_mock/corpus/$tokenrefresh_credential;
    }

    location = /rfc {
        tokenrefresh tokens $arg_f;
        tokenrefresh_login /_rfc;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://idp/_mock/echo;
    }

    location = /nested {
        tokenrefresh tokens $arg_f;
        tokenrefresh_login /_nested;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://idp/_mock/echo;
    }
--- init
my @files = corpus_files();
cmp_ok(scalar @files, '>=', 50, scalar(@files) . ' corpus files');
my @wrong;
for my $f (@files) {
    my ($expect, $format) = $f =~ /^(ok|bad)-(rfc|nested)-/ or next;
    my $r = hit(GET => "/$format?f=$f");
    my $want = $expect eq 'ok' ? 200 : 502;
    push @wrong, "$f: $r->{status}" if $r->{status} != $want;
}
is(join(', ', @wrong), '', 'ok-* stored and used, bad-* refused with 502');
--- request
GET /calls
--- response_body_like: ^calls=\d+ corpus=\d+\n$
--- no_error_log
[alert]
[crit]
[emerg]
