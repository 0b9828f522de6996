# Where the token goes: to the upstream request of the location that uses
# it, and nowhere else.  Not $http_authorization, not mirror or
# auth_request subrequests, not the token endpoint, not error_page
# targets, not response headers or logs.  A mock endpoint,
# http://idp/_mock/echo, records every request it gets.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use Test::Nginx::Socket 'no_plan';
use t::TokenRefresh;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: $http_authorization stays the client's, the token variables are empty outside the upstream request
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;

        add_header X-Client-Authorization $http_authorization;
        add_header X-Token "[$tokenrefresh_authorization][$tokenrefresh_access_token]";
    }
--- more_headers
Authorization: Basic Y2xpZW50OnNlY3JldA==
--- request
GET /api/a
--- response_headers
X-Client-Authorization: Basic Y2xpZW50OnNlY3JldA==
X-Token: [][]
--- response_body_like: "style":"bearer"
--- no_error_log
[error]



=== TEST 2: mirror and auth_request subrequests get no token
Both subrequests go to locations that pass $tokenrefresh_authorization,
as an inherited proxy_set_header would.
--- config
    proxy_set_header Authorization $tokenrefresh_authorization;

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        auth_request /check;
        mirror /mirror;

        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_pass http://api;
    }

    location = /check {
        internal;
        proxy_pass_request_body off;
        proxy_pass http://idp/_mock/echo?from=auth_request;
    }

    location = /mirror {
        internal;
        proxy_pass http://idp/_mock/echo?from=mirror;
    }
--- init
my $r = hit(GET => '/api/a');
like($r->{content}, qr/"style":"bearer"/, 'the API got the token');
my %seen;
ok(wait_until(sub {
    %seen = map { $_->{query} => $_->{headers} }
            grep { $_->{path} eq '/_mock/echo' } @{ requests() };
    return $seen{'from=mirror'} && $seen{'from=auth_request'};
}, 5), 'both subrequests were made');
is($seen{'from=mirror'}{authorization}, undef, 'mirror: no token');
is($seen{'from=auth_request'}{authorization}, undef, 'auth_request: no token');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]



=== TEST 3: the token endpoint gets no token, even with an inherited proxy_set_header
--- config
    proxy_set_header Authorization $tokenrefresh_authorization;

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location = /_refresh {
        internal;
        proxy_set_body "grant_type=refresh_token&refresh_token=$tokenrefresh_refresh_token_form";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        tokenrefresh_refresh /_refresh;
        tokenrefresh_ahead 0;
        proxy_pass http://api;
    }
--- init
mock(lifetime => 1);
my $r = hit(GET => '/api/a');
my $expires = time + scaled(1);
wait_until(sub { time > $expires + 0.05 }, 3);
$r = hit(GET => '/api/b');
like($r->{content}, qr/"token_n":3\b/, 'refreshed');
my @tok = grep { $_->{path} eq '/token' } @{ requests() };
is(scalar @tok, 2, 'a login and a refresh');
is($_->{headers}{authorization}, undef, 'no token sent to the token endpoint')
    for @tok;
--- request
GET /calls
--- response_body
calls=2 client_credentials=1 refresh_token=1
--- no_error_log
[error]



=== TEST 4: an error_page target gets no token
The upstream is down; error_page sends the request to a location that
passes the same header.
--- config
    proxy_set_header Authorization $tokenrefresh_authorization;

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_pass http://127.0.0.1:1/;
        error_page 502 = /fallback;
    }

    location = /fallback {
        proxy_pass http://idp/_mock/echo?from=error_page;
    }
--- init
my $r = hit(GET => '/api/a');
is($r->{content}, "echo\n", 'the error_page target answered');
my ($fb) = grep { $_->{query} eq 'from=error_page' } @{ requests() };
ok($fb, 'the error_page target was reached');
is($fb->{headers}{authorization}, undef, 'without the token');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1



=== TEST 5: the access log shows what the module did, never the token
--- http_config
    log_format tr '$request_uri auth=[$tokenrefresh_authorization] token=[$tokenrefresh_access_token] outcome=$tokenrefresh_outcome credential=$tokenrefresh_credential';
--- config
    access_log logs/tr.log tr;

    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=$tokenrefresh_credential";
        proxy_pass http://idp/token;
    }

    location /api/ {
        tokenrefresh tokens billing;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
--- init
my $log = "$Test::Nginx::Util::ServRoot/logs/tr.log";
hit(GET => '/api/a');
hit(GET => '/api/b');
my @lines;
ok(wait_until(sub {
    open my $fh, '<', $log or return 0;
    @lines = <$fh>;
    return @lines == 2;
}, 5), 'two lines logged');
like($lines[0], qr{^/api/a auth=\[-\] token=\[-\] outcome=refreshed credential=billing$},
     'the first request logged in');
like($lines[1], qr{^/api/b auth=\[-\] token=\[-\] outcome=hit credential=billing$},
     'the second reused the token');
--- request
GET /calls
--- response_body
calls=1 client_credentials=1
--- no_error_log
[error]
