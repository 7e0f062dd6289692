-- One row per customer account, with their order history summed up (customer lifetime value included:
-- the fuller breakdown is in fct_customer_lifetime_value).
select
    customers.customer_id,
    customers.email,
    customers.first_name,
    customers.last_name,
    customers.country_code,
    customers.created_at,
    customers.updated_at,
    orders.first_order_date,
    orders.last_order_date,
    coalesce(orders.order_count, 0) as order_count,
    coalesce(orders.lifetime_value, 0) as lifetime_value
from {{ ref('stg_shop_db__customers') }} as customers
left join {{ ref('int_customer_orders') }} as orders on orders.customer_id = customers.customer_id
