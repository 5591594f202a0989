// Package testcert makes throw-away certificate authorities and
// certificates for tests (TLS, mutual TLS), generated at run time with
// crypto/x509 so that no key is ever committed. It is only imported from
// tests.
package testcert
