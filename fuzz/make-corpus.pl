#!/usr/bin/perl
# Writes fuzz/corpus/: token responses that are hard to parse right.  The
# name says what must happen: ok-* is stored, bad-* refused; *-rfc-* is
# read with the standard fields (RFC 6749), *-nested-* with
# /data/accessToken, /data/refreshToken and /data/accessTokenExp (ms).
# The corpus seeds the fuzzer and is replayed through nginx by
# t/015-corpus.t.
# Copyright (C) 2026 The ngx_http_tokenrefresh_module authors
# BSD 2-Clause License: see the file LICENSE.

use strict;
use warnings;
use File::Basename qw(dirname);
use MIME::Base64 qw(encode_base64url);

my $dir = dirname(__FILE__) . '/corpus';
mkdir $dir;

my $jwt = sub {
    my ($payload) = @_;
    return join '.', encode_base64url('{"alg":"HS256","typ":"JWT"}'),
                     encode_base64url($payload), encode_base64url('sig');
};

my %c = (
    'ok-rfc-minimal' => '{"access_token":"abc"}',
    'ok-rfc-standard' => '{"access_token":"at-1-abc","token_type":"Bearer",'
        . '"expires_in":3600,"refresh_token":"rt-2-def","scope":"a b"}',
    'ok-rfc-expires-string' => '{"access_token":"abc","expires_in":"3599"}',
    'ok-rfc-expires-fraction' => '{"access_token":"abc","expires_in":3599.9}',
    'ok-rfc-expires-exponent' => '{"access_token":"abc","expires_in":3.6e3}',
    'ok-rfc-expires-huge' => '{"access_token":"abc","expires_in":1e308}',
    'ok-rfc-expires-huge-int' =>
        '{"access_token":"abc","expires_in":99999999999999999999999999999}',
    'ok-rfc-refresh-null' => '{"access_token":"abc","refresh_token":null}',
    'ok-rfc-unicode-elsewhere' =>
        '{"note":"\u00e9\u4e2d\ud83d\ude00","access_token":"abc"}',
    'ok-rfc-escaped-token' => '{"access_token":"a\/b\u0041"}',
    'ok-rfc-deep-elsewhere' => '{"x":' . ('[' x 30) . (']' x 30)
        . ',"access_token":"abc"}',
    'ok-rfc-fields-in-arrays' =>
        '{"list":[{"access_token":"no"}],"access_token":"yes"}',
    'ok-rfc-whitespace' => " \n\t{ \"access_token\" : \"abc\" } \r\n",
    'ok-rfc-jwt-exp' => '{"access_token":"'
        . $jwt->('{"sub":"x","exp":4102444800}') . '"}',
    'ok-rfc-jwt-without-exp' => '{"access_token":"'
        . $jwt->('{"sub":"x"}') . '"}',
    'ok-rfc-jwt-garbage-payload' => '{"access_token":"aaa.!!!.ccc"}',
    'ok-rfc-printable-edges' => '{"access_token":"!~\"\\\\{}"}',
    'ok-nested-standard' => '{"status":"ok","data":{"accessToken":"at",'
        . '"refreshToken":"rt","accessTokenExp":4102444800000}}',
    'ok-nested-exp-string' => '{"data":{"accessToken":"at",'
        . '"accessTokenExp":"4102444800000"}}',

    'bad-rfc-empty' => '',
    'bad-rfc-html' => '<html><body>Service Unavailable</body></html>',
    'bad-rfc-truncated' => '{"access_token":"abc","expires_in":36',
    'bad-rfc-trailing-garbage' => '{"access_token":"abc"} x',
    'bad-rfc-two-documents' => '{"access_token":"abc"} {"access_token":"d"}',
    'bad-rfc-duplicate-token' =>
        '{"access_token":"abc","access_token":"def"}',
    'bad-rfc-duplicate-expiry' =>
        '{"access_token":"abc","expires_in":5,"expires_in":3600}',
    'bad-rfc-token-number' => '{"access_token":123}',
    'bad-rfc-token-true' => '{"access_token":true}',
    'bad-rfc-token-object' => '{"access_token":{"value":"abc"}}',
    'bad-rfc-token-array' => '{"access_token":["abc"]}',
    'bad-rfc-token-null' => '{"access_token":null}',
    'bad-rfc-token-empty' => '{"access_token":""}',
    'bad-rfc-token-space' => '{"access_token":"a b"}',
    'bad-rfc-token-crlf' => '{"access_token":"abc\r\nX-Injected: 1"}',
    'bad-rfc-token-nul' => '{"access_token":"abc\u0000def"}',
    'bad-rfc-token-del' => '{"access_token":"abc\u007f"}',
    'bad-rfc-token-non-ascii' => '{"access_token":"caf\u00e9"}',
    'bad-rfc-token-too-long' => '{"access_token":"' . ('a' x 20000) . '"}',
    'bad-rfc-invalid-utf8' => qq({"access_token":"abc","x":"\xff\xfe"}),
    'bad-rfc-raw-nul' => qq({"access_token":"abc"\x00}),
    'bad-rfc-raw-control' => qq({"access_token":"ab\x01c"}),
    'bad-rfc-deep-nesting' => ('[' x 100) . (']' x 100),
    'bad-rfc-deep-nesting-object' => ('{"a":' x 40) . '1' . ('}' x 40),
    'bad-rfc-expires-negative' => '{"access_token":"abc","expires_in":-5}',
    'bad-rfc-expires-zero' => '{"access_token":"abc","expires_in":0}',
    'bad-rfc-expires-subsecond' => '{"access_token":"abc","expires_in":0.5}',
    'bad-rfc-expires-nan' => '{"access_token":"abc","expires_in":"NaN"}',
    'bad-rfc-expires-infinity' =>
        '{"access_token":"abc","expires_in":"Infinity"}',
    'bad-rfc-expires-hex' => '{"access_token":"abc","expires_in":"0x10"}',
    'bad-rfc-expires-bool' => '{"access_token":"abc","expires_in":true}',
    'bad-rfc-expires-space' => '{"access_token":"abc","expires_in":" 60"}',
    'bad-rfc-refresh-number' => '{"access_token":"abc","refresh_token":5}',
    'bad-rfc-refresh-empty' => '{"access_token":"abc","refresh_token":""}',
    'bad-rfc-refresh-crlf' =>
        '{"access_token":"abc","refresh_token":"r\nr"}',
    'bad-rfc-jwt-expired' => '{"access_token":"'
        . $jwt->('{"sub":"x","exp":1000000000}') . '"}',
    'bad-rfc-top-level-array' => '[{"access_token":"abc"}]',
    'bad-rfc-top-level-string' => '"abc"',
    'bad-rfc-top-level-number' => '42',
    'bad-rfc-error-answer' =>
        '{"error":"invalid_grant","error_description":"expired"}',
    'bad-nested-missing' => '{"data":{}}',
    'bad-nested-flat' => '{"accessToken":"at"}',
    'bad-nested-expired' =>
        '{"data":{"accessToken":"at","accessTokenExp":1000000000000}}',
    'bad-nested-seconds-not-ms' =>
        '{"data":{"accessToken":"at","accessTokenExp":1767225600}}',
    'bad-nested-data-array' => '{"data":[{"accessToken":"at"}]}',
);

for my $name (sort keys %c) {
    open my $fh, '>:raw', "$dir/$name" or die "$dir/$name: $!";
    print $fh $c{$name};
    close $fh;
}

print scalar(keys %c), " files in $dir\n";
