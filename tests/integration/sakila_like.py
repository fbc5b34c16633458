"""A Sakila-shaped sample database (the real one's schema features, generated data), built with SQL."""

from __future__ import annotations

import random

SCHEMA = [
    """CREATE TABLE language (language_id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT, name CHAR(20) NOT NULL,
    last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, PRIMARY KEY (language_id))""",
    """CREATE TABLE actor (actor_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, first_name VARCHAR(45) NOT NULL,
    last_name VARCHAR(45) NOT NULL,
    last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (actor_id), KEY idx_actor_last_name (last_name))""",
    """CREATE TABLE film (film_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, title VARCHAR(128) NOT NULL,
    description TEXT, release_year YEAR, language_id TINYINT UNSIGNED NOT NULL,
    rental_duration TINYINT UNSIGNED NOT NULL DEFAULT 3, rental_rate DECIMAL(4,2) NOT NULL DEFAULT 4.99,
    length SMALLINT UNSIGNED, replacement_cost DECIMAL(5,2) NOT NULL DEFAULT 19.99,
    rating ENUM('G','PG','PG-13','R','NC-17') DEFAULT 'G',
    special_features SET('Trailers','Commentaries','Deleted Scenes','Behind the Scenes'),
    last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, PRIMARY KEY (film_id),
    KEY idx_title (title), KEY idx_fk_language_id (language_id),
    CONSTRAINT fk_film_language FOREIGN KEY (language_id) REFERENCES language (language_id) ON UPDATE CASCADE)""",
    """CREATE TABLE film_actor (actor_id SMALLINT UNSIGNED NOT NULL, film_id SMALLINT UNSIGNED NOT NULL,
    last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (actor_id, film_id),
    KEY idx_fk_film_id (film_id),
    CONSTRAINT fk_film_actor_actor FOREIGN KEY (actor_id) REFERENCES actor (actor_id) ON UPDATE CASCADE,
    CONSTRAINT fk_film_actor_film FOREIGN KEY (film_id) REFERENCES film (film_id) ON UPDATE CASCADE)""",
    """CREATE TABLE film_text (film_id SMALLINT NOT NULL, title VARCHAR(255) NOT NULL, description TEXT,
    PRIMARY KEY (film_id), FULLTEXT KEY idx_title_description (title, description)) ENGINE=MyISAM""",
    """CREATE TABLE address (address_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, address VARCHAR(50) NOT NULL,
    district VARCHAR(20) NOT NULL, postal_code VARCHAR(10), phone VARCHAR(20) NOT NULL, location GEOMETRY NOT NULL,
    last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, PRIMARY KEY (address_id),
    SPATIAL KEY idx_location (location))""",
    """CREATE TABLE customer (customer_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT, first_name VARCHAR(45) NOT NULL,
    last_name VARCHAR(45) NOT NULL, email VARCHAR(50), address_id SMALLINT UNSIGNED NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE, create_date DATETIME NOT NULL,
    last_update TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, PRIMARY KEY (customer_id),
    KEY idx_fk_address_id (address_id), KEY idx_last_name (last_name),
    CONSTRAINT fk_customer_address FOREIGN KEY (address_id) REFERENCES address (address_id) ON UPDATE CASCADE)""",
    """CREATE TABLE rental (rental_id INT NOT NULL AUTO_INCREMENT, rental_date DATETIME NOT NULL,
    film_id SMALLINT UNSIGNED NOT NULL, customer_id SMALLINT UNSIGNED NOT NULL, return_date DATETIME,
    last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, PRIMARY KEY (rental_id),
    UNIQUE KEY (rental_date, film_id, customer_id), KEY idx_fk_customer_id (customer_id),
    CONSTRAINT fk_rental_customer FOREIGN KEY (customer_id) REFERENCES customer (customer_id) ON UPDATE CASCADE,
    CONSTRAINT fk_rental_film FOREIGN KEY (film_id) REFERENCES film (film_id) ON UPDATE CASCADE)""",
    """CREATE TABLE payment (payment_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT,
    customer_id SMALLINT UNSIGNED NOT NULL,
    rental_id INT DEFAULT NULL, amount DECIMAL(5,2) NOT NULL, payment_date DATETIME NOT NULL,
    last_update TIMESTAMP DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, PRIMARY KEY (payment_id),
    KEY idx_fk_customer_id (customer_id),
    CONSTRAINT fk_payment_rental FOREIGN KEY (rental_id) REFERENCES rental (rental_id) ON DELETE SET NULL,
    CONSTRAINT fk_payment_customer FOREIGN KEY (customer_id) REFERENCES customer (customer_id))""",
    """CREATE VIEW actor_info AS SELECT a.actor_id, a.first_name, a.last_name, COUNT(fa.film_id) AS films
    FROM actor a LEFT JOIN film_actor fa ON fa.actor_id = a.actor_id GROUP BY a.actor_id, a.first_name, a.last_name""",
    """CREATE VIEW customer_list AS SELECT cu.customer_id AS ID, CONCAT(cu.first_name, ' ', cu.last_name) AS name,
    a.address, a.phone FROM customer cu JOIN address a ON cu.address_id = a.address_id""",
    """CREATE TRIGGER ins_film AFTER INSERT ON film FOR EACH ROW
    INSERT INTO film_text (film_id, title, description) VALUES (new.film_id, new.title, new.description)""",
    """CREATE TRIGGER customer_create_date BEFORE INSERT ON customer FOR EACH ROW
    SET NEW.create_date = IFNULL(NEW.create_date, NOW())""",
    """CREATE FUNCTION get_customer_balance(p_customer_id INT) RETURNS DECIMAL(7,2) DETERMINISTIC READS SQL DATA
    BEGIN DECLARE v DECIMAL(7,2); SELECT IFNULL(SUM(amount), 0) INTO v FROM payment WHERE customer_id = p_customer_id;
    RETURN v; END""",
    """CREATE PROCEDURE film_in_stock(IN p_film_id INT, OUT p_count INT)
    BEGIN SELECT COUNT(*) INTO p_count FROM rental WHERE film_id = p_film_id AND return_date IS NOT NULL; END""",
]

WORDS = ["ACADEMY", "DINOSAUR", "ACE", "GOLDFINGER", "ADAPTATION", "HOLES", "AFFAIR", "PREJUDICE", "AGENT",
         "TRUMAN", "AIRPLANE", "SIERRA", "ALABAMA", "DEVIL", "ALADDIN", "CALENDAR", "ALAMO", "VIDEOTAPE", "ALASKA",
         "PHANTOM", "ALI", "FOREVER", "ALIEN", "CENTER"]


def statements(scale: int = 1, seed: int = 7) -> list[str]:
    """Schema plus deterministic data: about 1000 × scale rentals."""
    rng = random.Random(seed)
    out = list(SCHEMA)

    def values(rows: list[tuple]) -> str:
        def one(v: object) -> str:
            if v is None:
                return "NULL"
            if isinstance(v, str) and v.startswith("ST_"):
                return v
            if isinstance(v, str):
                return "'" + v.replace("\\", "\\\\").replace("'", "''") + "'"
            return str(v)
        return ",".join("(" + ",".join(one(v) for v in row) + ")" for row in rows)

    stamp = "'2006-02-15 04:34:33'"
    out.append("INSERT INTO language (name, last_update) VALUES ('English'," + stamp + "),('Italian'," + stamp
               + "),('Japanese'," + stamp + "),('Mandarin'," + stamp + ")")
    actors = [(f"{rng.choice(WORDS)}", f"{rng.choice(WORDS)}{i}") for i in range(200)]
    out.append("INSERT INTO actor (first_name, last_name) VALUES " + values(actors))
    films = []
    for i in range(300 * scale):
        title = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}"
        films.append((title, f"A {rng.choice(WORDS).lower()} story of\ta {rng.choice(WORDS).lower()}\n{i}",
                      2006, rng.randint(1, 4), rng.randint(3, 7), rng.choice(["0.99", "2.99", "4.99"]),
                      rng.randint(46, 185), "19.99", rng.choice(["G", "PG", "R"]), "Trailers,Deleted Scenes"))
    out.append("INSERT INTO film (title, description, release_year, language_id, rental_duration, rental_rate, length,"
               " replacement_cost, rating, special_features) VALUES " + values(films))
    pairs = sorted({(rng.randint(1, 200), rng.randint(1, 300 * scale)) for _ in range(1500 * scale)})
    out.append("INSERT INTO film_actor (actor_id, film_id) VALUES " + values(pairs))
    addresses = [(f"{i} Main Street", rng.choice(["Alberta", "QLD", "Nagasaki"]), f"{rng.randint(10000, 99999)}",
                  f"{rng.randint(10**9, 10**10)}", f"ST_GeomFromText('POINT({rng.uniform(-90, 90):.6f} {i % 180})')")
                 for i in range(150)]
    out.append("INSERT INTO address (address, district, postal_code, phone, location) VALUES " + values(addresses))
    customers = [(rng.choice(WORDS), f"{rng.choice(WORDS)}{i}", f"c{i}@example.org" if i % 7 else None,
                  rng.randint(1, 150), f"2006-02-14 22:04:{i % 60:02d}") for i in range(120)]
    out.append("INSERT INTO customer (first_name, last_name, email, address_id, create_date) VALUES "
               + values(customers))
    rentals = [(f"2005-{rng.randint(5, 8):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{i % 60:02d}:00",
                rng.randint(1, 300 * scale), rng.randint(1, 120),
                None if i % 11 == 0 else f"2005-09-{rng.randint(1, 28):02d} 10:00:00") for i in range(1000 * scale)]
    out.append("INSERT IGNORE INTO rental (rental_date, film_id, customer_id, return_date) VALUES " + values(rentals))
    payments = [(rng.randint(1, 120), None if i % 13 == 0 else i + 1, f"{rng.choice([0.99, 2.99, 4.99, 11.99])}",
                 f"2005-08-{rng.randint(1, 28):02d} 12:00:00") for i in range(min(900 * scale, 30000))]
    out.append("INSERT INTO payment (customer_id, rental_id, amount, payment_date) VALUES " + values(payments))
    out.append("UPDATE actor SET last_update = '2006-02-15 04:34:33'")
    return out
