package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/v2"
)

// redacted replaces a secret in --print-config.
const redacted = "xxxxx"

// printConfig writes the effective configuration of c (from parseConfig) as YAML, one key
// per setting (the --config file form, so the output can be saved and
// used as one), with secrets redacted.
func printConfig(c *config, w io.Writer) error {
	k := koanf.New("\x00") // keys are flag names: never split
	var err error
	c.flags.VisitAll(func(f *flag.Flag) {
		if slices.Contains(notInFile, f.Name) || err != nil {
			return
		}
		err = k.Set(f.Name, redact(f.Name, settingOf(f)))
	})
	if err != nil {
		return err
	}
	out, err := k.Marshal(yaml.Parser())
	if err != nil {
		return fmt.Errorf("print config: %w", err)
	}
	fmt.Fprintf(w, "# effective configuration (flag > %s* environment > --config file > default); secrets redacted\n", envPrefix)
	_, err = w.Write(out)
	return err
}

// settingOf returns the value of a setting: a duration as text, other
// values typed.
func settingOf(f *flag.Flag) any {
	v := f.Value.(flag.Getter).Get()
	if d, ok := v.(time.Duration); ok {
		return d.String()
	}
	return v
}

// redact hides what a setting may hold of a secret: the whole value of a
// setting named like a secret (a token, a password, a key; not a file
// naming one), and the credentials and secret-looking query parameters of a URL.
func redact(name string, v any) any {
	s, ok := v.(string)
	if !ok || s == "" {
		return v
	}
	if !strings.HasSuffix(name, "-file") && containsAny(name, "secret", "password", "token", "key") {
		return redacted
	}
	if !strings.Contains(s, "://") {
		return s
	}
	s = redactUserinfo(s)
	u, err := url.Parse(s)
	if err != nil || u.RawQuery == "" {
		return s
	}
	q := u.Query()
	for key := range q {
		if containsAny(strings.ToLower(key), "secret", "password", "token", "key", "auth") {
			q.Set(key, redacted)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
