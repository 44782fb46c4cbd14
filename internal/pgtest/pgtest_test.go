package pgtest

import (
	"context"
	"strings"
	"sync"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// seen records the database each of the parallel tests got.
var seen sync.Map

func currentDatabase(t *testing.T, url string) string {
	t.Helper()
	var name string
	if err := Connect(t, url).QueryRow(context.Background(), "select current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// testOwnTable runs in two parallel tests: each creates the same table in
// its own database, which would fail if they shared one.
func testOwnTable(t *testing.T) {
	t.Parallel()
	url := NewDatabase(t)
	conn := Connect(t, url)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "create table widgets (id int primary key, owner text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "insert into widgets values (1, $1)", t.Name()); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "select count(*) from widgets").Scan(&n); err != nil || n != 1 {
		t.Fatalf("count = %d, %v; want 1", n, err)
	}
	db := currentDatabase(t, url)
	if other, dup := seen.LoadOrStore(db, t.Name()); dup {
		t.Errorf("database %s used by both %s and %s", db, other, t.Name())
	}
}

func TestOwnTableA(t *testing.T) { testOwnTable(t) }
func TestOwnTableB(t *testing.T) { testOwnTable(t) }

func TestDatabasesAreIsolatedAndDropped(t *testing.T) {
	ctx := context.Background()
	var url1, url2, db1 string
	t.Run("sub", func(t *testing.T) {
		url1, url2 = NewDatabase(t), NewDatabase(t)
		if url1 == url2 {
			t.Fatalf("NewDatabase returned %s twice", url1)
		}
		c1, c2 := Connect(t, url1), Connect(t, url2)
		if _, err := c1.Exec(ctx, "create table only_in_one (x int)"); err != nil {
			t.Fatal(err)
		}
		var found *string
		if err := c2.QueryRow(ctx, "select to_regclass('only_in_one')::text").Scan(&found); err != nil {
			t.Fatal(err)
		}
		if found != nil {
			t.Errorf("table created in %s is visible in %s", url1, url2)
		}
		db1 = currentDatabase(t, url1)
		if !strings.HasPrefix(db1, "pgphi_testdatabasesareisolatedanddropped_sub_") {
			t.Errorf("database name %q does not follow the test name", db1)
		}
	})

	// The subtest's cleanup dropped its databases.
	var exists bool
	err := Connect(t, adminURL).QueryRow(ctx,
		"select exists (select from pg_database where datname = $1)", db1).Scan(&exists)
	if err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after its test finished", db1)
	}
}

func TestCluster(t *testing.T) {
	if Cluster() == nil {
		t.Skipf("using $%s", EnvDatabaseURL)
	}
	if got, want := adminURL, Cluster().URL("postgres"); got != want {
		t.Errorf("adminURL = %q, want %q", got, want)
	}
	var fsync string
	if err := Connect(t, adminURL).QueryRow(context.Background(), "show fsync").Scan(&fsync); err != nil || fsync != "off" {
		t.Errorf("fsync = %q, %v; want off (Fast)", fsync, err)
	}
}

func TestDatabaseName(t *testing.T) {
	long := strings.Repeat("VeryLongSubtestName/", 10)
	for _, in := range []string{"TestX", "TestX/sub case#01", long, "Ünïcode/ü"} {
		got := databaseName(in)
		if len(got) > 63 || strings.Trim(got, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("databaseName(%q) = %q: invalid identifier", in, got)
		}
	}
	if databaseName("TestX") == databaseName("TestX") {
		t.Error("databaseName is not unique")
	}
}
