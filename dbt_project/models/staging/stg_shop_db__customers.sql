select
    customer_id,
    email,
    first_name,
    last_name,
    country as country_code,
    cast(created_at as {{ dbt.type_timestamp() }}) as created_at,
    cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at
from {{ source('shop_db', 'customers') }}
