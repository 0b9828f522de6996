# What the token endpoint of a real provider receives from the module's
# token subrequests: the request headers, as the provider's raw header list
# shows them (duplicates kept).
#
# The module gives its token subrequests "Content-Type:
# application/x-www-form-urlencoded" and "Accept: application/json" of its
# own.  A token location that sets either with proxy_set_header sends it
# twice (a known limitation, being fixed).  oidc-provider runs on Node.js,
# whose HTTP parser keeps the first Content-Type and joins Accept values,
# and nginx sends the proxy_set_header value first: the provider accepts
# these requests, but a strict server may not (Content-Type is a singleton
# field, RFC 9110).  proxy_pass_request_headers off and explicit headers
# avoid it.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use lib '.';
use t::Interop;
use Test::Nginx::Socket 'no_plan';

master_on();
workers(1);
no_shuffle();

# the headers of the last token request, as [name, value] pairs
sub token_headers {
    my ($r) = grep { $_->{grant_type} eq 'client_credentials' } reverse @{ op_requests() };
    return $r ? $r->{headers} : [];
}

sub count_header {
    my ($name, $h) = @_;
    return scalar grep { lc $_->[0] eq lc $name } @$h;
}

sub values_of {
    my ($name, $h) = @_;
    return join ' | ', map { $_->[1] } grep { lc $_->[0] eq lc $name } @$h;
}

no warnings 'once';
*Test::Nginx::Util::token_headers = \&token_headers;
*Test::Nginx::Util::count_header = \&count_header;
*Test::Nginx::Util::values_of = \&values_of;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value('http_config', "    tokenrefresh_zone tokens:1m;\n"
                                     . ($block->http_config // ''));
    $block->set_value('config', <<'_EOC_' . ($block->config // ''));
    location /api/ {
        tokenrefresh tokens cc-post;
        tokenrefresh_login /_login;
        proxy_set_header Authorization $tokenrefresh_authorization;
        proxy_pass http://api;
    }
_EOC_
    $block->set_value('request', 'GET /opcalls');
    $block->set_value('response_body', "calls=1 client_credentials=1\n")
        unless defined $block->response_body;
});

run_tests();

__DATA__

=== TEST 1: the module's own headers, nothing set in the token location
--- config
    location = /_login {
        internal;
        proxy_set_body "grant_type=client_credentials&client_id=cc-post&client_secret=cc-post-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'served');
my $h = token_headers();
is(values_of('content-type', $h), 'application/x-www-form-urlencoded', 'one form Content-Type');
is(values_of('accept', $h), 'application/json', 'one Accept');
is(count_header('authorization', $h), 0, 'no Authorization');
is(count_header('cookie', $h), 0, 'no Cookie');
is_deeply(op_stats()->{duplicate_headers}, {}, 'no header twice');



=== TEST 2: proxy_set_header Accept replaces the module's: sent once
--- config
    location = /_login {
        internal;
        proxy_set_header Accept "application/json";
        proxy_set_body "grant_type=client_credentials&client_id=cc-post&client_secret=cc-post-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'the provider accepts it');
my $h = token_headers();
is(count_header('accept', $h), 1, 'Accept once')
    or diag 'Accept: ' . values_of('accept', $h);



=== TEST 3: proxy_set_header Content-Type replaces the module's: sent once
--- config
    location = /_login {
        internal;
        proxy_set_header Content-Type "application/x-www-form-urlencoded; charset=utf-8";
        proxy_set_body "grant_type=client_credentials&client_id=cc-post&client_secret=cc-post-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'the provider accepts it (Node keeps the first)');
my $h = token_headers();
like(values_of('content-type', $h), qr/^application\/x-www-form-urlencoded; charset=utf-8/,
     'the location\'s value comes first');
is(count_header('content-type', $h), 1, 'Content-Type once')
    or diag 'Content-Type: ' . values_of('content-type', $h);



=== TEST 4: the workaround: proxy_pass_request_headers off, explicit headers
--- config
    location = /_login {
        internal;
        proxy_pass_request_headers off;
        proxy_set_header Content-Type "application/x-www-form-urlencoded";
        proxy_set_header Accept "application/json";
        proxy_set_body "grant_type=client_credentials&client_id=cc-post&client_secret=cc-post-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
is(hit(GET => '/api/a')->{status}, 200, 'served');
my $h = token_headers();
is(count_header('content-type', $h), 1, 'Content-Type once');
is(count_header('accept', $h), 1, 'Accept once');
is(count_header('content-length', $h), 1, 'Content-Length once');
is_deeply(op_stats()->{duplicate_headers}, {}, 'no header twice');



=== TEST 5: a JSON Content-Type set by the location: the provider sees it, refuses the form body
oidc-provider reads only form bodies at the token endpoint; it answers
400 invalid_request.  The location's value is the one the provider sees,
although the module adds its form Content-Type after it.
--- config
    location = /_login {
        internal;
        proxy_set_header Content-Type "application/json";
        proxy_set_body "grant_type=client_credentials&client_id=cc-post&client_secret=cc-post-secret-0123456789abcdef&resource=$TEST_NGINX_RESOURCE_FORM";
        proxy_pass http://op/token;
    }
--- init
is(hit(GET => '/api/a')->{status}, 502, 'the login failed');
my $s = op_stats();
is($s->{by_status}{400}, 1, 'status 400');
is($s->{errors}{none}{invalid_request}, 1, 'invalid_request');
--- response_body
calls=1 none=1 failed=1
