package jwks_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"testing"

	"github.com/millrace/millrace/platform/auth/jwks"
)

// FuzzParse feeds arbitrary documents to Parse: it must never panic, and
// every key it returns must be a usable public key.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"1"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := jwks.Parse(data)
		if err != nil {
			if len(keys) != 0 {
				t.Fatalf("error %v with %d keys", err, len(keys))
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			switch pub := k.Public.(type) {
			case *rsa.PublicKey:
				if pub.N.BitLen() < 2048 || pub.E < 3 {
					t.Fatalf("weak RSA key accepted: %d bits, e=%d", pub.N.BitLen(), pub.E)
				}
			case *ecdsa.PublicKey:
				if pub.X == nil || !pub.Curve.IsOnCurve(pub.X, pub.Y) {
					t.Fatal("EC key off its curve accepted")
				}
			case ed25519.PublicKey:
				if len(pub) != ed25519.PublicKeySize {
					t.Fatalf("Ed25519 key of %d bytes accepted", len(pub))
				}
			default:
				t.Fatalf("key of type %T", pub)
			}
		}
	})
}
