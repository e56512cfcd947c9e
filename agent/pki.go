package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// A small PKI for a cluster that has none yet (`beacon tls`, docs/security.md):
// an ECDSA P-256 CA and certificates it signs. Keys are written with mode
// 0600; files are never overwritten.

// CreateCA writes a CA certificate and key, beacon-ca.pem and
// beacon-ca-key.pem, valid for days, into dir.
func CreateCA(dir string, days int, commonName string) (certFile, keyFile string, err error) {
	if days <= 0 {
		return "", "", errors.New("validity in days must be positive")
	}
	certFile, keyFile = filepath.Join(dir, "beacon-ca.pem"), filepath.Join(dir, "beacon-ca-key.pem")
	if err := refuseExisting(certFile, keyFile); err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Beacon"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(0, 0, days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, key, nil); err != nil {
		return "", "", err
	}
	if err := writePEM(certFile, nil, der); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// CertRequest describes a certificate for CreateCert.
type CertRequest struct {
	// Node names the certificate and its files NODE.pem and NODE-key.pem.
	Node string
	// IPs and DNS are added to the certificate's names. A server
	// certificate also carries ServerTLSName, the node name, localhost,
	// 127.0.0.1 and ::1.
	IPs []net.IP
	DNS []string
	// Client makes a client certificate (for the CLI or beacon lb).
	Client bool
	// CAFile and CAKeyFile are the signing CA's certificate and key.
	CAFile, CAKeyFile string
	Dir               string
	Days              int
}

// Cert is a certificate CreateCert wrote.
type Cert struct {
	CertFile, KeyFile string
	DNS               []string
	IPs               []net.IP
	NotAfter          time.Time
}

// CreateCert writes a certificate and key signed by the CA.
func CreateCert(r CertRequest) (*Cert, error) {
	if err := CheckCertName(r.Node); err != nil {
		return nil, err
	}
	if r.Days <= 0 {
		return nil, errors.New("validity in days must be positive")
	}
	var ips []net.IP
	if !r.Client {
		ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	ips = append(ips, r.IPs...)
	dns := []string{r.Node}
	if !r.Client {
		dns = append(dns, ServerTLSName, "localhost")
	}
	for _, d := range r.DNS {
		if err := CheckCertName(d); err != nil {
			return nil, err
		}
		dns = append(dns, d)
	}
	caCert, caKey, err := loadCA(r.CAFile, r.CAKeyFile)
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(r.Dir, r.Node+".pem"), filepath.Join(r.Dir, r.Node+"-key.pem")
	if err := refuseExisting(certFile, keyFile); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: r.Node, Organization: []string{"Beacon"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(0, 0, r.Days),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// Servers dial each other, so their certificates serve both ends.
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:       dns,
		IPAddresses:    ips,
		SubjectKeyId:   keyID(&key.PublicKey),
		AuthorityKeyId: caCert.SubjectKeyId,
	}
	if r.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if caCert.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	if err := writePEM(keyFile, key, nil); err != nil {
		return nil, err
	}
	if err := writePEM(certFile, nil, der); err != nil {
		return nil, err
	}
	return &Cert{CertFile: certFile, KeyFile: keyFile, DNS: dns, IPs: ips, NotAfter: tmpl.NotAfter}, nil
}

var hostname = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$`)

// CheckCertName accepts a node or DNS name that is safe as a file name.
func CheckCertName(s string) error {
	if len(s) > 253 || !hostname.MatchString(s) {
		return fmt.Errorf("%q is not a valid name (letters, digits, '.', '-' and '_')", s)
	}
	return nil
}

func loadCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA certificate (make one with `beacon tls ca create`): %w", err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA key: %w", err)
	}
	cp, _ := pem.Decode(cb)
	if cp == nil || cp.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	kp, _ := pem.Decode(kb)
	if kp == nil {
		return nil, nil, fmt.Errorf("%s: no PEM key", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kp.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: unsupported key type %T", keyFile, k)
	}
	return cert, signer, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n.Add(n, big.NewInt(1))
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha1.Sum(der) // RFC 5280 §4.2.1.2 method 1: an identifier, not a security control
	return sum[:]
}

// refuseExisting fails if any of files exists.
func refuseExisting(files ...string) error {
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("%s exists; not overwriting it", f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writePEM writes a key (mode 0600) or a certificate (0644), failing if the
// file exists.
func writePEM(path string, key *ecdsa.PrivateKey, certDER []byte) error {
	var block *pem.Block
	mode := os.FileMode(0o644)
	if key != nil {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		block, mode = &pem.Block{Type: "PRIVATE KEY", Bytes: der}, 0o600
	} else {
		block = &pem.Block{Type: "CERTIFICATE", Bytes: certDER}
	}
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := pem.Encode(fh, block); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}
